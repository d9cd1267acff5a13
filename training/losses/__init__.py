"""Training objectives, one per file; :func:`build_objective` picks one from a config."""
