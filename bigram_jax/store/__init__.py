"""What bigram-jax keeps on disk between runs: the per-user cache and its entry format, file locks, checked input files."""
