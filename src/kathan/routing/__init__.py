"""Which backend serves which model name."""
