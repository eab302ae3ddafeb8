"""Migration scripts, oldest first by their number."""
