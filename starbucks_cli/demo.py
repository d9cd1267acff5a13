"""``starbucks demo``: index the bundled CACM collection, compare sizes, cascades and BM25, show a search."""
from __future__ import annotations

from pathlib import Path

from starbucks_cli.common import add_model_args, check_model_arg, check_writable_dir, pick_device


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="index the bundled CACM corpus, compare plans with BM25 and show a search",
                       description="A first look: what sizes and plans are, a small table of quality against "
                                   "speed on the CACM collection (3,204 abstracts), a plot of it, one search, "
                                   "and the commands to run next.")
    p.add_argument("--out", type=Path, default=Path("demo-index"), help="where to put the demo index (default: %(default)s)")
    add_model_args(p, index_built=False)
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    check_writable_dir(args.out, "the demo index")
    check_model_arg(args)


def run(args) -> None:
    from retrieval.demo import run_demo

    print(run_demo(args.out, progress=not args.quiet, model=args.model, encoder=args.encoder,
                   threads=args.threads, device=pick_device(args.device, args.quiet)))
