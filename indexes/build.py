"""Build an index in one streaming pass over a corpus, resumable after any interruption.

Documents are encoded in fixed-size chunks; each finished chunk is written
atomically to ``OUT.partial/chunks`` together with a hash of its documents. A
rerun of the same command skips finished chunks (after checking the corpus still
matches them), so no document is lost or encoded twice, and the result is
byte-identical to an uninterrupted build. The finished index is assembled in
``OUT.partial/final`` and appears at ``OUT`` by a single directory rename.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from indexes.docids import write_docids
from indexes.faiss_index import new_index, fill_index
from indexes.files import atomic_write, atomic_write_json, file_digest, fsync_dir
from indexes.manifest import BINARY_INDEX_TYPES, FORMAT_VERSION, INDEX_TYPES, MANIFEST, Manifest
from indexes.prefixes import PrefixMatrix, open_stored, prefix_sources
from indexes.unique import DocidSet
from starbucks.corpus import Doc, count_docs, iter_corpus, resolve_corpus
from starbucks.encoder import Encoder, check_encoder, make_encoder
from starbucks.errors import InputError, StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size, parse_sizes

BUILD_STATE = "build.json"
DEFAULT_CHUNK = 1024
EMPTY_DOCS = ("index", "skip")
EMPTY_IDS_KEPT = 1000  # the manifest lists at most this many empty documents' ids (and counts them all)


class EmptyDocsWarning(UserWarning):
    """Some documents have no text (they are indexed as empty text, or skipped)."""


def default_sizes(model: StarbucksModel) -> tuple[list[Size], list[Size]]:
    """Shortlist at the last layer cut to 1/12 and 1/6 of its width; rerank at the full size.

    Those cuts keep most of any model's quality (the last layer ranks best at a given
    width). A model trained at several sizes also shortlists at its smallest trained size
    at least 1/6 as wide (narrower ones rank too poorly to shortlist from) and stores its
    wider trained sizes, so a plan can stop before the last layer and encode its query
    with fewer layers.
    """
    full = Size(model.num_layers, model.hidden_size)
    shortlist = {Size(full.layer, max(1, full.dim // 12)), Size(full.layer, max(1, full.dim // 6))}
    rerank = {full}
    wide = [s for s in sorted(set(model.config.sizes) - {full}, key=lambda s: (s.dim, s.layer))
            if s.dim >= full.dim // 6]
    if wide:
        shortlist.add(wide[0])
        rerank.update(s for s in wide[1:] if s.layer < full.layer)
    return sorted(shortlist), sorted(rerank)


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def build_lock(out: Path):
    """Hold ``OUT.lock`` for the whole build: a second build of the same ``OUT`` is refused.

    The lock is an advisory ``flock``, released by the kernel however the holder ends
    (even ``kill -9``), so a stale file never blocks a resume; the holder removes the file.
    """
    path = lock_path(out)
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise StarbucksError(
                f"another build of {out} is running (process {holder}, lock {path}); "
                f"wait for it to finish, or stop it and rerun this command to resume"
            ) from None
        try:  # the file may have been removed by a holder that finished meanwhile: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
        for folder in created:  # folders made only for the lock, left empty by a failed build
            try:
                folder.rmdir()
            except OSError:
                break


def build_index(
    corpus: str | Path | None,
    out: str | Path,
    model: str | Path | StarbucksModel | None = None,
    shortlist: Iterable | str | None = None,
    rerank: Iterable | str | None = None,
    index_type: str = "flat",
    chunk_size: int = DEFAULT_CHUNK,
    batch_size: int = 32,
    overwrite: bool = False,
    progress: bool = True,
    encoder: str = "auto",
    threads: int | None = None,
    bm25: bool = False,
    empty_docs: str = "index",
    device: str | None = None,
    binary: Iterable | str | None = None,
    vectors: str | Path | None = None,
    ray: str | None = None,
    binary_index: str = "flat",
    prefixes: bool = False,
) -> Path:
    """Index ``corpus`` into folder ``out``; rerun the same call to resume an interrupted build.

    ``bm25``: also store a BM25 index (bm25s) in the folder, so plans can start with a ``bm25`` stage.
    ``empty_docs``: documents with no text are ``index``ed (with the vector of the empty text) or
    ``skip``ped; either way an :class:`EmptyDocsWarning` and the manifest give their count and ids.
    ``device``: where the model encodes (default: a GPU when torch sees one).
    ``binary``: stored sizes whose sign bits also get a binary (Hamming) FAISS index, ``shortlist/bLxD.faiss``.
    ``prefixes``: store each layer's narrower sizes once, as prefixes of its widest stored size (brought
    to unit length as they are read; see :mod:`indexes.prefixes`): less disk, slower reads. Default:
    every size in its own file.
    ``binary_index``: its type, ``flat`` (exact), ``hnsw`` or ``ivf`` (for large corpora; plans pass them
    ``~ef=N`` or ``~nprobe=N``), recorded in the manifest.
    ``vectors``: build from precomputed vectors instead of a corpus (pass ``corpus=None``): a folder with
    ``docids.txt`` and ``LxD.npy`` for every stored size, as ``Encoder.encode_passages`` returns them for
    ``model`` (see :mod:`indexes.vectors`); the same resume, lock and atomic finish as from text.
    ``ray``: encode shards of the corpus on a Ray cluster (``""``: a local one, with ``threads`` CPUs; else
    its address), one thread per task, then build from their vectors (see :mod:`indexes.ray_build`); empty
    documents and ``bm25`` are handled as in a single-process build.

    Nothing is written before the first chunk of vectors is: a build that fails on its input
    leaves no ``OUT.partial`` behind. Two builds of one ``out`` at once: the second is refused.
    """
    out = Path(out)
    if index_type not in INDEX_TYPES:
        raise StarbucksError(f"unknown index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    check_encoder(encoder)
    if empty_docs not in EMPTY_DOCS:
        raise StarbucksError(f"empty_docs must be one of {', '.join(EMPTY_DOCS)}, not {empty_docs!r}")
    if chunk_size < 1:
        raise StarbucksError("chunk size must be positive")
    if binary_index not in BINARY_INDEX_TYPES:
        raise StarbucksError(f"unknown binary index type {binary_index!r}: choose one of {', '.join(BINARY_INDEX_TYPES)}")
    if binary_index != "flat" and not binary:
        raise StarbucksError(f"binary index type {binary_index!r} needs binary sizes to index (e.g. --binary 6x384)")
    if vectors is not None:
        if corpus is not None:
            raise StarbucksError("build from a corpus or from vectors, not both")
        if bm25:
            raise StarbucksError("BM25 needs the documents' text: it cannot be built from vectors (drop --bm25)")
        if not Path(vectors).is_dir():
            raise InputError("no such vectors folder", vectors)
        source = Path(vectors).resolve()
    else:
        source = resolve_corpus(corpus)
    if ray is not None:
        from indexes.ray_build import import_ray

        if vectors is not None:
            raise StarbucksError("a Ray build encodes a corpus: it takes no vectors folder")
        import_ray()
    with build_lock(out):
        return _build(source, out, model, shortlist, rerank, index_type, chunk_size, batch_size, overwrite,
                      progress, encoder, threads, bm25, empty_docs, device, binary, vectors is not None, ray,
                      binary_index, prefixes)


def _build(source, out: Path, model, shortlist, rerank, index_type, chunk_size, batch_size, overwrite,
           progress, encoder, threads, bm25, empty_docs, device, binary=None, from_vectors=False,
           ray=None, binary_index="flat", prefixes=False) -> Path:
    if out.exists() and not overwrite:
        raise StarbucksError(f"{out} already exists; pass --overwrite to rebuild it")
    if out.exists() and not (out / MANIFEST).is_file():
        raise StarbucksError(f"{out} exists and is not an index; refusing to overwrite it")
    if model is None:
        model_name = "default"
    elif isinstance(model, StarbucksModel):
        model_name = model.name
    else:  # a local folder is recorded absolute, so the index opens from anywhere
        model_name = str(Path(model).resolve()) if Path(model).is_dir() else str(model)
    spec = model if isinstance(model, StarbucksModel) else (None if model is None else model_name)
    if not isinstance(model, StarbucksModel):
        model = StarbucksModel.load(model, device=device)
    short_default, rerank_default = default_sizes(model)
    shortlist = parse_sizes(shortlist) if shortlist else short_default
    rerank = [s for s in (parse_sizes(rerank) if rerank else rerank_default) if s not in shortlist]
    sizes = sorted(set(shortlist) | set(rerank))
    model.check_sizes(sizes)
    binary = parse_sizes(binary) if binary else []
    if missing := [str(s) for s in binary if s not in sizes]:
        raise StarbucksError(f"binary sizes {', '.join(missing)} are not stored (stored: {', '.join(map(str, sizes))})")

    work = partial_dir(out)
    state = {
        "format_version": FORMAT_VERSION,
        "vectors" if from_vectors else "corpus": str(source),
        "model_name": model_name,
        "model_fingerprint": model.fingerprint(),
        "shortlist": [str(s) for s in shortlist],
        "rerank": [str(s) for s in rerank],
        "index_type": index_type,
        "chunk_size": chunk_size,
        "empty_docs": empty_docs,
    }
    if binary:  # only then: an interrupted build without binary= resumes as before
        state["binary"] = [str(s) for s in binary]
    if binary_index != "flat":
        state["binary_index"] = binary_index
    if prefixes:
        state["prefixes"] = True
    if ray is not None:
        state.update(ray=True, encoder=encoder, batch_size=batch_size)
    _check_resume(work, state)
    if ray is not None:
        from indexes.ray_build import encode_on_ray

        shards, empty = encode_on_ray(ray, source, work, state, spec, encoder, batch_size, sizes, chunk_size,
                                      empty_docs, progress, threads)
        num_docs, corpus_fp = _copy_vector_chunks(shards, work, state, sizes, chunk_size, progress)
    elif from_vectors:
        num_docs, corpus_fp = _copy_vector_chunks(source, work, state, sizes, chunk_size, progress)
        empty = []
    else:
        encoder = make_encoder(model, encoder, threads, batch_size=batch_size)
        encoder.quiet_truncation = True  # said once below, with the totals
        num_docs, corpus_fp, empty = _encode_chunks(source, work, state, encoder, sizes, chunk_size, empty_docs, progress)
        _report_truncation(encoder)
    empty_record = _report_empty(empty, empty_docs)

    final = work / "final"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    stored_as = prefix_sources(sizes) if prefixes else {}
    _assemble(work / "chunks", final, sizes, shortlist, index_type, num_docs, progress, stored_as,
              model.config.normalized)
    if binary:
        _store_binary(final, binary, binary_index, num_docs, stored_as, model.config.normalized)
    if bm25:
        _store_bm25(source, final, progress)
    # ---- end of BM25 storage ----
    files = {
        str(p.relative_to(final)): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(final.rglob("*")) if p.is_file()
    }
    manifest = Manifest(
        model_name=model_name, model_fingerprint=state["model_fingerprint"],
        model_config=model.config.to_dict(), shortlist=shortlist, rerank=rerank,
        index_type=index_type, num_docs=num_docs, corpus=str(source),
        corpus_fingerprint=corpus_fp, files=files, empty_docs=empty_record, binary_index=binary_index,
        prefixes=stored_as,
    )
    atomic_write_json(final / MANIFEST, manifest.to_dict())
    _publish(final, out)
    shutil.rmtree(work)
    return out


def _check_resume(work: Path, state: dict) -> None:
    """Check an existing work folder was started with the same settings (nothing is created here)."""
    path = work / BUILD_STATE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous != state:
            changed = sorted(k for k in state if previous is None or previous.get(k) != state[k])
            raise StarbucksError(
                f"{work} holds an interrupted build with other settings ({', '.join(changed)}); "
                f"rerun it with the same settings to resume, or delete {work} to start over"
            )


def _start_work(work: Path, state: dict) -> None:
    """Create the work folder and its settings, when the first chunk is about to be written."""
    if (work / BUILD_STATE).is_file():
        return
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / BUILD_STATE, state)


def _report_truncation(encoder) -> None:
    """One warning with how many passages this run cut to the model's passage length."""
    from starbucks.truncation import TruncationWarning

    counts = getattr(encoder, "truncated", {}).get("passages")
    if counts and counts["cut"]:
        warnings.warn(f"{counts['cut']} of {counts['total']} passages encoded in this run were longer than "
                      f"{counts['limit']} tokens and were cut to {counts['limit']} (the model's passage length)",
                      TruncationWarning, stacklevel=4)


def _report_empty(empty: list[str], policy: str) -> dict:
    """Warn about documents without text; the record the manifest keeps of them."""
    if empty:
        shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        done = "indexed as empty text" if policy == "index" else "skipped"
        warnings.warn(f"{len(empty)} document(s) have no text, {done} (empty_docs={policy!r}; "
                      f"listed in the manifest): {shown}", EmptyDocsWarning, stacklevel=4)
    return {"policy": policy, "count": len(empty), "ids": empty[:EMPTY_IDS_KEPT]}


def _chunk_hash(docs: list[Doc]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.docid.encode() + b"\0" + d.text.encode() + b"\n")
    return h.hexdigest()


def _encode_chunks(source, work: Path, state: dict, encoder: Encoder, sizes, chunk_size: int, empty_docs: str,
                   progress: bool) -> tuple[int, str, list[str]]:
    """Stream the corpus; encode every chunk not already on disk.

    Returns (documents indexed, corpus hash, ids of documents without text).
    """
    chunks = work / "chunks"
    total = count_docs(source)
    if total == 0:
        raise InputError("corpus is empty", source)
    corpus_hash = hashlib.sha256()
    seen = DocidSet()  # 8 bytes a document
    unchecked: list[Doc] = []  # read since the last duplicate check, skipped ones included
    empty: list[str] = []
    batch: list[Doc] = []
    number = 0
    count = 0
    bar = tqdm(total=total, unit="doc", desc="indexing", disable=not progress, smoothing=0.05)

    def check_unique() -> None:
        at = seen.add([d.docid for d in unchecked])
        if at is not None:
            raise InputError(f"duplicate document id {unchecked[at].docid!r}", source, unchecked[at].line)
        unchecked.clear()

    def flush() -> None:
        nonlocal number
        check_unique()  # before the chunk is encoded, as a duplicate is found before anything is written
        digest = _chunk_hash(batch)
        corpus_hash.update(digest.encode())
        path = chunks / f"{number:08d}.npz"
        done = _stored_hash(path)
        if done is not None and done != digest:
            raise InputError(
                f"the corpus changed since the interrupted build: documents {number * chunk_size + 1}-"
                f"{number * chunk_size + len(batch)} differ (from line {batch[0].line}); "
                f"delete {chunks.parent} to start over",
                source,
            )
        if done is None:
            _start_work(work, state)
            vectors = encoder.encode_passages([d.text for d in batch], sizes)
            _write_chunk(path, digest, [d.docid for d in batch], {s: vectors[s].astype(np.float16) for s in sizes})
        bar.update(len(batch))
        number += 1
        batch.clear()

    for doc in iter_corpus(source):
        unchecked.append(doc)
        if not doc.text:
            empty.append(doc.docid)
            if empty_docs == "skip":
                bar.update(1)
                continue
        batch.append(doc)
        count += 1
        if len(batch) == chunk_size:
            flush()
    if batch:
        flush()
    check_unique()
    bar.close()
    if count == 0:
        raise InputError("corpus is empty" if not empty else "every document of the corpus is empty", source)
    # Chunks past the end belong to a longer earlier corpus.
    if (chunks / f"{number:08d}.npz").exists():
        raise InputError(f"the corpus shrank since the interrupted build; delete {chunks.parent} to start over", source)
    return count, corpus_hash.hexdigest(), empty


def _write_chunk(path: Path, digest: str, docids: list[str], arrays: dict) -> None:
    """One finished chunk: its hash, docids and float16 vectors per size, written atomically."""
    named = {str(s): a for s, a in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, hash=np.array(digest), docids=np.array(docids), **named))


def _copy_vector_chunks(folder: Path, work: Path, state: dict, sizes, chunk_size: int,
                        progress: bool) -> tuple[int, str]:
    """Copy precomputed vectors into chunks as encoding would write them, skipping finished ones.

    Returns (documents, hash of the vectors and docids). Every input file is checked first.
    """
    from indexes.vectors import vector_chunks

    chunks = work / "chunks"
    vectors_hash = hashlib.sha256()
    count = number = 0
    with tqdm(unit="doc", desc="copying vectors", disable=not progress) as bar:
        for docids, arrays, digest in vector_chunks(folder, sizes, chunk_size):
            vectors_hash.update(digest.encode())
            path = chunks / f"{number:08d}.npz"
            done = _stored_hash(path)
            if done is not None and done != digest:
                raise InputError(f"the vectors changed since the interrupted build: rows {count + 1}-"
                                 f"{count + len(docids)} differ; delete {work} to start over", folder)
            if done is None:
                _start_work(work, state)
                _write_chunk(path, digest, docids, arrays)
            count += len(docids)
            number += 1
            bar.update(len(docids))
    if (chunks / f"{number:08d}.npz").exists():
        raise InputError(f"the vectors shrank since the interrupted build; delete {work} to start over", folder)
    return count, vectors_hash.hexdigest()


def _stored_hash(path: Path) -> str | None:
    """The document hash of a finished chunk, or None if it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return str(z["hash"])
    except (OSError, ValueError, KeyError, EOFError):
        return None  # damaged: encode it again


def _assemble(chunks: Path, final: Path, sizes, shortlist, index_type: str, num_docs: int, progress: bool,
              prefixes: dict | None = None, normalized: bool = True) -> None:
    """Concatenate chunks into one float16 matrix per size (none for a size in ``prefixes``: its vectors
    are the prefixes of its layer's widest, checked against the chunks), then build the FAISS indexes."""
    prefixes = prefixes or {}
    files = sorted(chunks.glob("*.npz"))
    (final / "vectors").mkdir()
    matrices = {
        s: open_memmap(final / "vectors" / f"{s}.npy", mode="w+", dtype=np.float16, shape=(num_docs, s.dim))
        for s in sizes if s not in prefixes
    }

    def docids():
        row = 0
        for path in tqdm(files, desc="assembling", unit="chunk", disable=not progress):
            with np.load(path) as z:
                n = len(z["docids"])
                for s in matrices:
                    matrices[s][row : row + n] = z[str(s)]
                for s, w in prefixes.items():
                    _check_prefix(z, s, w, PrefixMatrix(matrices[w], s.dim, normalized)[row : row + n])
                yield from (str(d) for d in z["docids"])
                row += n

    write_docids(final, docids())
    for m in matrices.values():
        m.flush()
    matrices.update({s: PrefixMatrix(matrices[w], s.dim, normalized) for s, w in prefixes.items()})
    if shortlist:
        import faiss

        (final / "shortlist").mkdir()
        for s in shortlist:
            index = new_index(index_type, s.dim, num_docs)
            fill_index(index, matrices[s])
            faiss.write_index(index, str(final / "shortlist" / f"{s}.faiss"))
    del matrices
    for p in final.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


PREFIX_TOLERANCE = 0.02  # largest coordinate difference between a size and its rescaled float16 prefix


def _check_prefix(chunk, size: Size, wide_size: Size, rebuilt: np.ndarray) -> None:
    """A one-line error unless ``size``'s vectors in ``chunk`` are ``rebuilt``, the prefixes of
    ``wide_size``'s (at unit length when the model normalises), as the model makes them."""
    rebuilt = np.asarray(rebuilt, dtype=np.float32)
    given = np.asarray(chunk[str(size)], dtype=np.float32)
    bad = np.flatnonzero(~(np.abs(given - rebuilt) <= PREFIX_TOLERANCE).all(axis=1))
    if bad.size:
        docid = chunk["docids"][bad[0]]
        raise StarbucksError(f"the {size} vectors of document {docid!r} are not the first {size.dim} coordinates of "
                             f"its {wide_size} vectors (at unit length when the model normalises), as "
                             f"the model makes them: check the vectors, or build without --prefixes")


def _store_binary(final: Path, sizes, index_type: str, num_docs: int, prefixes: dict, normalized: bool) -> None:
    """``shortlist/bLxD.faiss``: the sign bits of each stored size, from the assembled vectors, in a
    FAISS binary index of ``index_type``."""
    import faiss

    from indexes.faiss_index import BINARY_PREFIX, binary_index

    (final / "shortlist").mkdir(exist_ok=True)
    stored = open_stored(final, num_docs, set(sizes) | {prefixes[s] for s in sizes if s in prefixes}, prefixes,
                         normalized)
    for s in sizes:
        path = final / "shortlist" / f"{BINARY_PREFIX}{s}.faiss"
        faiss.write_index_binary(binary_index(stored[s], index_type), str(path))
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def summary(out: Path, seconds: float) -> str:
    """What a finished build made: documents, sizes, time, speed and bytes on disk."""
    manifest = json.loads((out / MANIFEST).read_text())
    docs = manifest["num_docs"]
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    empty = manifest.get("empty_docs") or {}
    lines = [
        f"index written to {out}: {docs:,} documents in {seconds:.1f} s ({docs / max(seconds, 1e-9):,.1f} docs/s"
        f" in this run), {on_disk / 1e6:,.1f} MB on disk",
        f"  shortlist (FAISS {manifest['index_type']}): {', '.join(manifest['shortlist']) or 'none'};"
        f" rerank: {', '.join(manifest['rerank']) or 'none'}",
    ]
    if empty.get("count"):
        lines.append(f"  {empty['count']} empty document(s) {'indexed' if empty['policy'] == 'index' else 'skipped'}")
    return "\n".join(lines)


def _publish(final: Path, out: Path) -> None:
    """Move the finished index into place with renames; a reader sees the old or the new one."""
    if out.exists():
        old = out.with_name(f"{out.name}.old{os.getpid()}")
        os.rename(out, old)
        os.rename(final, out)
        shutil.rmtree(old)
    else:
        os.rename(final, out)
    fsync_dir(out.parent)


def _store_bm25(source, final: Path, progress: bool) -> None:
    """BM25 over the indexed documents, in row order (documents a policy skipped are left out)."""
    from indexes.docids import DocidTable
    from indexes.sparse import FOLDER, build_sparse

    table = DocidTable(final)
    n = len(table)

    def texts():
        row = 0
        for doc in iter_corpus(source):
            if row < n and doc.docid == table[row]:
                yield doc.text
                row += 1
        if row != n:
            raise StarbucksError(f"{source}: the corpus changed while the index was built (BM25 found {row} of {n} documents)")

    (final / FOLDER).mkdir()
    build_sparse(texts(), final / FOLDER, progress=progress)
