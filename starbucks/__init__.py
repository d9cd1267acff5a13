"""Shared core: sizes, the model definition, the encoder and corpus/topic readers.

Every other package (``training``, ``indexes``, ``retrieval``) builds on this one;
it imports none of them.
"""
from starbucks.sizes import Size, parse_sizes
from starbucks.config import ModelConfig
from starbucks.errors import StarbucksError, InputError

__all__ = ["Size", "parse_sizes", "ModelConfig", "StarbucksError", "InputError"]
