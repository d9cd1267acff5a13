"""The ``starbucks`` command lives in the ``starbucks_cli`` package; this name keeps
``python -m retrieval.cli`` and ``from retrieval.cli import main`` working."""
import sys

from starbucks_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
