"""The training engine: usable and tested without Qt."""
