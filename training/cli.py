"""``starbucks train``, ``build-train-data`` and ``merge``: thin layers over the library."""
from __future__ import annotations

import argparse

from training.config import TrainConfig


def add_parsers(subparsers) -> None:
    """Register the training sub-commands on the ``starbucks`` command's sub-parsers."""
    p = subparsers.add_parser(
        "train", help="train a Starbucks model from a config file",
        description="Train (or resume) a model as a config file in experiments/configs/ describes. "
                    "The output folder loads like any model in 'starbucks index'.",
    )
    p.add_argument("config", help="a .json or .toml training config")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the output folder")
    p.add_argument("--output", help="override the config's output folder")
    p.add_argument("--max-steps", type=int, help="override the config's step count")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_train)

    b = subparsers.add_parser(
        "build-train-data", help="write Tevatron-style training JSONL with mined hard negatives",
        description="Judged queries (--queries, --qrels) with their relevant passages and hard negatives "
                    "mined by BM25 or a model; or, with --pseudo N, label-free records whose queries are "
                    "cut from N passages of the corpus (train them with \"teacher\": \"base\").",
    )
    b.add_argument("--corpus", required=True, help="a BEIR folder or corpus .jsonl/.tsv")
    b.add_argument("--queries", help="queries (BEIR queries.jsonl, TSV or TREC topics)")
    b.add_argument("--qrels", help="training judgements (BEIR TSV or TREC qrels)")
    b.add_argument("--out", required=True, help="output .jsonl")
    b.add_argument("--negatives", choices=["bm25", "model"], default="bm25", help="how to mine negatives")
    b.add_argument("--model", help="model folder for --negatives model (default: the default model)")
    b.add_argument("--pseudo", type=int, metavar="N", help="label-free mode: pseudo-queries from N passages")
    b.add_argument("--depth", type=int, default=100, help="ranks searched for negatives (default 100)")
    b.add_argument("--num-negatives", type=int, default=30, help="negatives kept per query (default 30)")
    b.add_argument("--skip-top", type=int, default=0, help="ignore the top ranks (likely unjudged positives)")
    b.add_argument("--min-relevance", type=int, default=1, help="lowest grade counted as positive (default 1)")
    b.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="keep N judged queries out of the training file and write their qrels to "
                        "NAME.holdout.tsv beside it, for validation")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--threads", type=int, default=1, help="BM25 retrieval threads")
    b.set_defaults(func=run_build_train_data)

    m = subparsers.add_parser(
        "merge", help="mix a trained model's weights with its base model's (WiSE-FT)",
        description="Average a trained run's weights with its base model's. A small collection's fine-tuning "
                    "makes the sub-sizes usable but can cost the full size some generality; the mix keeps most "
                    "of the first and gives back most of the second.",
    )
    m.add_argument("run", help="a trained model folder (its train_config.json names the base model)")
    m.add_argument("--out", required=True, help="new model folder")
    m.add_argument("--base", help="the base model (default: the one the run started from)")
    m.add_argument("--base-weight", type=float, default=0.5, help="share of the base model's weights (default 0.5)")
    m.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float16",
                   help="saved weight type (default float16)")
    m.set_defaults(func=run_merge)

    a = subparsers.add_parser(
        "adapt", help="train per-layer adaptors for a corpus on a frozen model (2D Matryoshka sizes in minutes)",
        description="Encode the corpus once with the frozen model, then train one map per layer on the cached "
                    "vectors so that every layer's prefixes rank as its full size does (label-free: passages of the "
                    "corpus serve as queries; with --queries and --qrels judged queries add a cross-entropy). "
                    "OUT becomes a model folder for 'starbucks index --model OUT'; rerunning the same command "
                    "resumes an interrupted run from OUT/adapt/.",
    )
    a.add_argument("corpus", help="a BEIR folder or corpus .jsonl/.tsv")
    a.add_argument("--out", required=True, help="output model folder (its adapt/ subfolder holds the cache and checkpoint)")
    a.add_argument("--model", help="the frozen model (default: all-MiniLM-L6-v2)")
    a.add_argument("--queries", help="queries of the corpus (BEIR queries.jsonl, TSV or TREC topics), used label-free")
    a.add_argument("--qrels", help="judgements for --queries: adds a cross-entropy toward each judged positive")
    a.add_argument("--sizes", help="sizes to train, e.g. 1x16,2x32,6x64 (default: every layer at every diagonal width)")
    a.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    a.add_argument("--kind", choices=["linear", "mlp"], default="linear", help="map per layer (default linear)")
    a.add_argument("--shared", action="store_true", help="one map shared by every layer")
    a.add_argument("--free-last", action="store_true",
                   help="let the last layer's map change its full size too (default: kept orthogonal, full size unchanged)")
    a.add_argument("--bias", action="store_true", help="maps with a bias")
    a.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    a.add_argument("--seed", type=int, default=42)
    a.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    a.set_defaults(func=run_adapt, check=check_adapt)


def run_train(args: argparse.Namespace) -> int:
    from training.loop import train

    overrides = {}
    if args.resume:
        overrides["resume"] = True
    if args.output:
        overrides["output"] = args.output
    if args.max_steps:
        overrides["max_steps"], overrides["epochs"] = args.max_steps, None
    cfg = TrainConfig.load(args.config, **overrides)
    out = train(cfg, progress=not args.no_progress)
    print(f"trained model written to {out}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from training.merge import merge_folders

    out = merge_folders(args.run, args.out, args.base, args.base_weight, args.dtype)
    print(f"merged model written to {out}")
    return 0


def run_build_train_data(args: argparse.Namespace) -> int:
    from training.build_data import build_pseudo_data, build_train_data

    common = dict(negatives=args.negatives, model=args.model, depth=args.depth,
                  num_negatives=args.num_negatives, skip_top=args.skip_top, seed=args.seed, threads=args.threads)
    if args.pseudo is not None:
        if args.queries or args.qrels or args.holdout:
            raise SystemExit("build-train-data: --pseudo takes no --queries/--qrels/--holdout")
        if args.pseudo < 1:
            raise SystemExit("build-train-data: --pseudo needs a positive passage count")
        n = build_pseudo_data(args.corpus, args.out, args.pseudo, **common)
    else:
        if not (args.queries and args.qrels):
            raise SystemExit("build-train-data: give --queries and --qrels, or --pseudo N for label-free data")
        n = build_train_data(args.corpus, args.queries, args.qrels, args.out,
                             min_relevance=args.min_relevance, holdout=args.holdout, **common)
    print(f"wrote {n} training records to {args.out}")
    if args.holdout:
        from training.build_data import holdout_path

        print(f"held-out judgements of {args.holdout} queries in {holdout_path(args.out)}")
    return 0


def check_adapt(args: argparse.Namespace) -> None:
    """Arguments and paths, before torch loads."""
    from pathlib import Path

    from starbucks.corpus import resolve_corpus
    from starbucks.errors import InputError, StarbucksError
    from starbucks.sizes import parse_sizes

    resolve_corpus(args.corpus)
    for name in ("queries", "qrels"):
        path = getattr(args, name)
        if path and not path.startswith("irds:") and not Path(path).exists():
            raise InputError("no such file", path)
    if args.qrels and not args.queries:
        raise StarbucksError("adapt: --qrels needs --queries")
    if args.sizes:
        args.sizes = [str(s) for s in parse_sizes(args.sizes)]
    if args.steps < 1:
        raise StarbucksError(f"adapt: --steps must be at least 1, not {args.steps}")
    if args.threads < 1:
        raise StarbucksError(f"adapt: --threads must be at least 1, not {args.threads}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)


def run_adapt(args: argparse.Namespace) -> int:
    import torch

    from training.adapt import AdaptSettings, adapt

    torch.set_num_threads(args.threads)
    settings = AdaptSettings(sizes=tuple(args.sizes or ()), kind=args.kind, shared=args.shared,
                             orthogonal_last=not args.free_last, bias=args.bias, steps=args.steps,
                             learning_rate=args.learning_rate, seed=args.seed)
    progress = not (args.no_progress or getattr(args, "quiet", False))
    out = adapt(args.corpus, args.out, model=args.model, settings=settings, queries=args.queries,
                qrels=args.qrels, progress=progress)
    print(f"adapted model written to {out}")
    return 0
