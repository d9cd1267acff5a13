"""Training experiments: per-size evaluation of trained models and the method comparison."""
