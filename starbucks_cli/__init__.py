"""The ``starbucks`` command: a thin layer over the library, one module per subcommand.

Each subcommand module registers its parser and has a ``check`` that validates arguments
and paths with the standard library alone, then a ``run`` that imports torch, FAISS and
the model. An argument error therefore answers at once, and any error a user can act on is
one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from starbucks.errors import StarbucksError
from starbucks_cli import calibrate, demo, evaluate, index, search, verify
from starbucks_cli.common import plain_warnings, quiet_transformers
from training import cli as training_cli

SUBCOMMANDS = (index, search, evaluate, calibrate, demo, verify)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2, as argparse does, without the usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="starbucks", description="Adaptive two-stage retrieval with Starbucks (2D Matryoshka) embeddings.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    training_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = ["starbucks", *argv]  # as results files record it
    plain_warnings()
    try:
        check = getattr(args, "check", None)
        if check is not None:
            check(args)
        quiet_transformers()
        args.func(args)
    except (StarbucksError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system refusal (disk full, permissions) is the user's to fix, not a bug
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
