"""``starbucks verify``: check every file of an index against the checksums in its manifest."""
from __future__ import annotations

from pathlib import Path

from starbucks_cli.common import check_index_dir


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check every index file's size and SHA-256 against its manifest",
                       description="Read the whole index and compare each file's size and SHA-256 with the "
                                   "manifest. Opening an index checks sizes only; this also catches files "
                                   "changed in place (bit rot, a bad copy, an edit).")
    p.add_argument("index", type=Path)
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    check_index_dir(args.index)


def run(args) -> None:
    from indexes.index import verify_index

    files, size = verify_index(args.index)
    print(f"{args.index}: {files} files, {size / 1e6:.1f} MB, every size and SHA-256 matches the manifest")
