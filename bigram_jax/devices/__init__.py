"""Devices: the (data, model) mesh, where each array lives, multi-process runs, and what fits in memory."""
