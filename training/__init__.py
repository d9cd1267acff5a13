"""Training Starbucks models: SRL fine-tuning, SMAE pre-training and the baselines, from a config file.

Imports the core ``starbucks`` package only; the trained output is a plain model folder.
"""
