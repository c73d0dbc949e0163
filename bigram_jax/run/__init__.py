"""A training run around the core: the job, its pace, its folder, the host feed, progress, TensorBoard, pictures, signals."""
