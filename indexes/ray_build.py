"""Encoding a corpus on a Ray cluster, then one index from the vectors (:mod:`indexes.vectors`).

The driver streams the corpus and sends shards of ``SHARD_CHUNKS`` chunks to Ray tasks (one CPU,
or one GPU where the cluster has them); a worker encodes a shard chunk by chunk, exactly as a
single-process build encodes its chunks, so the vectors are the same. Each finished shard is
written atomically to ``OUT.partial/ray/`` with a hash of its documents: rerun, the build skips
finished shards (after checking the corpus still matches them). The shards are then concatenated
into ``OUT.partial/ray/vectors/`` (``docids.txt``, ``LxD.npy``, and ``empty.txt``: the ids of documents
with no text, for the manifest) and built into the index as ``--vectors`` builds one, with its resume,
atomic finish and manifest.

Each task takes one CPU and encodes with one thread, so workers never oversubscribe a machine; a local
Ray started here gets ``threads`` CPUs (default: every core).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from indexes.files import atomic_write, atomic_write_json
from starbucks.errors import InputError, StarbucksError

SHARD_CHUNKS = 8  # chunks a Ray task encodes
STATE = "state.json"
EMPTY = "empty.txt"  # in the vectors folder: ids of the documents with no text, one a line


def import_ray():
    try:
        import ray
    except ImportError:
        raise StarbucksError("--ray needs Ray: install the ray extra (pip install 'starbucks-retrieval[ray]')") from None
    return ray


_cached: dict = {}


def _encode_shard(model, encoder, batch_size, sizes, chunks):
    """On a worker: float16 vectors per size of each chunk's texts, concatenated in order."""
    import torch

    from starbucks.encoder import make_encoder
    from starbucks.model import StarbucksModel

    key = (str(model) if not isinstance(model, StarbucksModel) else id(model), encoder, batch_size)
    if key not in _cached:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = model if isinstance(model, StarbucksModel) else StarbucksModel.load(model, device=device)
        _cached.clear()
        _cached[key] = make_encoder(loaded, encoder, 1, batch_size=batch_size)  # the task holds one CPU
        _cached[key].quiet_truncation = True
    enc = _cached[key]
    parts = [enc.encode_passages(texts, sizes) for texts in chunks]
    return {str(s): np.concatenate([p[s].astype(np.float16) for p in parts]) for s in sizes}


def encode_on_ray(address, source, work: Path, state: dict, model, encoder: str, batch_size: int, sizes,
                  chunk_size: int, empty_docs: str, progress: bool, threads: int | None = None) -> tuple[Path, list[str]]:
    """Encode ``source`` on Ray into ``work/ray``: the vectors folder that holds the result, and the ids of
    the documents with no text (indexed or skipped as ``empty_docs`` says)."""
    ray = import_ray()
    folder = work / "ray"
    vectors = folder / "vectors"
    if (folder / STATE).is_file() and json.loads((folder / STATE).read_text()) != state:
        raise StarbucksError(f"{work} holds an interrupted Ray build with other settings; rerun it with the same "
                             f"settings to resume, or delete {work} to start over")
    if (vectors / "done").is_file():
        return vectors, read_empty(vectors)
    started = not ray.is_initialized()
    if started:  # a local Ray gets ``threads`` CPUs (default: every core); an address joins that cluster
        local = {"num_cpus": threads} if threads and not address else {}
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, **local)
    try:
        _encode(ray, source, folder, work, state, model, encoder, batch_size, sizes, chunk_size, empty_docs, progress)
        return vectors, read_empty(vectors)
    finally:
        if started:
            ray.shutdown()


def _encode(ray, source, folder, work, state, model, encoder, batch_size, sizes, chunk_size, empty_docs, progress):
    from indexes.build import _chunk_hash, _stored_hash, _write_chunk
    from indexes.unique import DocidSet
    from starbucks.corpus import count_docs, iter_corpus

    vectors = folder / "vectors"
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(_encode_shard)
    model_ref = ray.put(model)
    in_flight: dict = {}
    limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    seen = DocidSet()
    empty: list[str] = []
    shard_docs = SHARD_CHUNKS * chunk_size
    shards: list[Path] = []
    bar = tqdm(total=count_docs(source), unit="doc", desc="encoding on Ray", disable=not progress)

    def collect(wait_all: bool) -> None:
        while in_flight and (wait_all or len(in_flight) >= limit):
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            path, digest, docids = in_flight.pop(ready[0])
            arrays = ray.get(ready[0])
            _write_chunk(path, digest, docids, arrays)
            bar.update(len(docids))

    def send(docs) -> None:
        at = seen.add([d.docid for d in docs])
        if at is not None:
            raise InputError(f"duplicate document id {docs[at].docid!r}", source, docs[at].line)
        empty.extend(d.docid for d in docs if not d.text)
        kept = [d for d in docs if d.text or empty_docs == "index"]
        if not kept:
            return
        digest = _chunk_hash(kept)
        path = folder / f"{len(shards):08d}.npz"
        shards.append(path)
        done = _stored_hash(path)
        if done is not None and done != digest:
            raise InputError(f"the corpus changed since the interrupted build (shard {len(shards)}, from line "
                             f"{kept[0].line}); delete {work} to start over", source)
        if done is not None:
            bar.update(len(kept))
            return
        if not (folder / STATE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / STATE, state)
        chunks = [[d.text for d in kept[i : i + chunk_size]] for i in range(0, len(kept), chunk_size)]
        in_flight[task.remote(model_ref, encoder, batch_size, sizes, chunks)] = (path, digest, [d.docid for d in kept])
        collect(wait_all=False)

    pending = []
    indexed = 0
    for doc in iter_corpus(source):
        pending.append(doc)
        indexed += bool(doc.text or empty_docs == "index")
        if indexed == shard_docs:
            send(pending)
            pending, indexed = [], 0
    if pending:
        send(pending)
    collect(wait_all=True)
    bar.close()
    if not shards:
        raise InputError("corpus is empty" if seen.count == 0 else "every document of the corpus is empty", source)
    _concatenate(shards, vectors, sizes, empty)


def read_empty(vectors: Path) -> list[str]:
    """The ids of the documents with no text a finished Ray encoding saw."""
    text = (vectors / EMPTY).read_text(encoding="utf-8") if (vectors / EMPTY).is_file() else ""
    return text.splitlines()


def _concatenate(shards: list[Path], vectors: Path, sizes, empty: list[str]) -> None:
    """``vectors/docids.txt``, ``vectors/LxD.npy`` and ``vectors/empty.txt`` from the shards, one shard in
    memory at a time."""
    counts = []
    for path in shards:
        with np.load(path) as z:
            counts.append(len(z["docids"]))
    vectors.mkdir(exist_ok=True)
    matrices = {s: open_memmap(vectors / f"{s}.npy", mode="w+", dtype=np.float16, shape=(sum(counts), s.dim))
                for s in sizes}
    row = 0
    with open(vectors / "docids.txt", "w", encoding="utf-8") as f:
        for path, n in zip(shards, counts):
            with np.load(path) as z:
                for s in sizes:
                    matrices[s][row : row + n] = z[str(s)]
                f.writelines(f"{d}\n" for d in z["docids"])
            row += n
    for m in matrices.values():
        m.flush()
    del matrices
    atomic_write(vectors / EMPTY, lambda f: f.writelines(f"{d}\n".encode() for d in empty))
    atomic_write(vectors / "done", lambda f: f.write(b"1\n"))
