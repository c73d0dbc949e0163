"""The commands: each one's flags and entry point, and the one-line parser and guard they share."""
