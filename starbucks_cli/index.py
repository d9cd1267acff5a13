"""``starbucks index``: build an index in one streaming, resumable pass."""
from __future__ import annotations

import time
from pathlib import Path

from starbucks_cli.common import (
    add_model_args, check_input, check_model_arg, check_writable_dir, pick_device, positive_int,
)


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="index a corpus: FAISS shortlist indexes plus stored vectors for reranking",
                       description="Index a corpus in one streaming pass. Interrupted, the same command resumes.")
    p.add_argument("corpus", nargs="?",
                   help="a BEIR folder, a .jsonl (_id/id, title, text) or .tsv (id<TAB>text) file, or irds:ID")
    p.add_argument("--vectors", type=Path, metavar="DIR",
                   help="build from precomputed vectors instead of a corpus: DIR holds docids.txt (one docid a "
                        "line, in row order) and LxD.npy (float16 or float32 [docs, D], as the model's "
                        "Encoder.encode_passages returns them) for every stored size")
    p.add_argument("--out", required=True, type=Path, help="the index folder to create")
    add_model_args(p, index_built=False)
    p.add_argument("--shortlist", help="sizes with a FAISS index, e.g. 2x32,4x64 (default: the last layer cut to "
                                       "1/12 and 1/6 of its width, plus the model's smallest trained size at least "
                                       "1/6 as wide: 3x64,6x32,6x64 for the shipped model)")
    p.add_argument("--rerank", help="sizes stored for reranking, e.g. 6x384 (default: the full size and the wider "
                                    "trained sizes of earlier layers: 4x128,5x256,6x384 for the shipped model)")
    p.add_argument("--index-type", default="flat", choices=["flat", "hnsw", "ivfpq"], help="FAISS index for shortlist sizes (default: %(default)s)")
    p.add_argument("--chunk-size", type=positive_int, default=1024, help="documents per resumable chunk (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="documents per forward pass (default: %(default)s)")
    p.add_argument("--empty-docs", choices=["index", "skip"], default="index",
                   help="documents with no text: index them (the vector of empty text) or leave them out; "
                        "either way a warning and the manifest list them (default: %(default)s)")
    p.add_argument("--bm25", action="store_true", help="also store a BM25 index in the index folder")
    p.add_argument("--binary", help="stored sizes whose sign bits also get a binary (Hamming) shortlist index, "
                                    "e.g. 6x384, for plans such as b6x384:2000,6x384:10")
    p.add_argument("--binary-index", default="flat", choices=["flat", "hnsw", "ivf"],
                   help="FAISS index for the --binary sizes: exact, or HNSW / IVF for large corpora, searched "
                        "with plans such as b6x384~ef=64:2000 or b6x384~nprobe=8:2000 (default: %(default)s)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="encode shards of the corpus on a Ray cluster (its address; none: a local Ray), each "
                        "shard resumable, then build the index from their vectors (needs the ray extra)")
    p.add_argument("--prefixes", action="store_true",
                   help="store a layer's narrower sizes once, read as prefixes of its widest stored vector: less "
                        "disk, slower reads (default: every size in its own file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    from starbucks.errors import InputError, StarbucksError

    if args.vectors is not None:
        if args.corpus is not None:
            raise StarbucksError("give a corpus or --vectors DIR, not both")
        if args.bm25:
            raise StarbucksError("--bm25 needs the documents' text: it cannot be built from --vectors")
        if not args.vectors.is_dir():
            raise InputError("no such vectors folder", args.vectors)
    elif args.corpus is None:
        raise StarbucksError("give a corpus to index, or --vectors DIR")
    if args.ray is not None:
        import importlib.util

        if args.vectors is not None:
            raise StarbucksError("--ray encodes a corpus: it takes no --vectors")
        if importlib.util.find_spec("ray") is None:
            raise StarbucksError("--ray needs Ray: install the ray extra (pip install 'starbucks-retrieval[ray]')")
    if args.binary_index != "flat" and not args.binary:
        raise StarbucksError(f"--binary-index {args.binary_index} needs --binary SIZES to index, e.g. --binary 6x384")
    if args.corpus is not None:
        check_input(args.corpus, "corpus")
    check_model_arg(args)
    if args.out.exists() and not args.overwrite:
        raise StarbucksError(f"{args.out} already exists; pass --overwrite to rebuild it")
    check_writable_dir(args.out, "the index")


def run(args) -> None:
    from indexes import build_index
    from indexes.build import summary

    start = time.perf_counter()
    out = build_index(
        args.corpus, args.out, model=args.model, shortlist=args.shortlist, rerank=args.rerank,
        index_type=args.index_type, chunk_size=args.chunk_size, batch_size=args.batch_size,
        overwrite=args.overwrite, progress=not args.quiet, encoder=args.encoder, threads=args.threads,
        bm25=args.bm25, empty_docs=args.empty_docs, device=pick_device(args.device, args.quiet),
        binary=args.binary, vectors=args.vectors, ray=args.ray, binary_index=args.binary_index,
        prefixes=args.prefixes,
    )
    print(summary(out, time.perf_counter() - start))
