"""Training objectives, one per file; ``training.objectives`` picks one from a config."""
