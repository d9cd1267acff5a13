"""Adaptors for a frozen backbone, trained on cached pooled hidden states.

The backbone is run once over the corpus (and the queries, where there are any): each
text's pooled full-width vector at every layer is cached. Training then never touches
the backbone: each step maps cached vectors through the adaptors, cuts them to every
trained size, and applies the SRL terms of ``training.losses.adaptor``.

- Each map starts at the PCA rotation of its layer's normalised passage vectors (the
  directions of most variance first), so before any step every prefix is that layer's
  PCA cut and full-width scores are the backbone's.
- The last layer's map may be kept orthogonal (``orthogonal_last``): its full size then
  scores exactly as the backbone does, and only its narrower cuts change.
- Label-free, the queries are passages of the corpus (never scored against themselves)
  and the corpus's queries if given; with judgements (``qrels``), judged queries also
  get a cross-entropy toward their positive.

``adapt(corpus, model, out)`` writes a model folder (the backbone, its settings with the
adapted sizes, and the adaptors) that every ``starbucks`` command loads; work files
(the cache, a checkpoint) go under ``out/adapt/`` so an interrupted run resumes.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from starbucks.adaptors import Adaptors, AdaptorSpec
from starbucks.errors import InputError, StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size, diagonal, parse_sizes
from training.losses.adaptor import adaptor_losses

WORK = "adapt"
STATE_NAME = "state.pt"


@dataclasses.dataclass(frozen=True)
class AdaptSettings:
    """How adaptors are trained; saved with the checkpoint so a resumed run uses the same."""

    sizes: tuple[Size, ...] = ()  # trained sizes; () = every adapted layer at every diagonal width
    kind: str = "linear"  # "linear" or "mlp"
    bias: bool = False
    shared: bool = False  # one map for every layer
    mlp_hidden: int = 0  # inner width of the MLP variant (0: the model's width)
    orthogonal_last: bool = True  # keep the last layer's map orthogonal (full size unchanged)
    steps: int = 300
    queries_per_step: int = 64
    passages_per_step: int = 512
    learning_rate: float = 1e-3
    temperature: float = 0.0  # 0: 0.05 for normalised vectors, 1 for raw dot products
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    seed: int = 42
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(parse_sizes(self.sizes)) if self.sizes else ())
        for name in ("steps", "queries_per_step", "passages_per_step", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise StarbucksError(f"adapt: {name} must be at least 1, not {getattr(self, name)}")
        if self.learning_rate <= 0 or self.temperature < 0:
            raise StarbucksError("adapt: learning_rate must be positive and temperature not negative")
        if self.kind not in ("linear", "mlp"):
            raise StarbucksError(f"adapt: kind must be 'linear' or 'mlp', not {self.kind!r}")

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), sizes=[str(s) for s in self.sizes])


def train_sizes(model: StarbucksModel, settings: AdaptSettings) -> list[Size]:
    """The sizes trained: as given (checked against the model), else every layer at every diagonal width."""
    if settings.sizes:
        model.check_sizes(settings.sizes)
        return list(settings.sizes)
    widths = sorted({s.dim for s in diagonal(model.num_layers, model.hidden_size)})
    return [Size(layer, w) for layer in range(1, model.num_layers + 1) for w in widths]


def model_sizes(model: StarbucksModel, trained: Sequence[Size]) -> list[Size]:
    """The sizes an adapted model advertises: the diagonal and the last layer's diagonal widths, if trained."""
    diag = diagonal(model.num_layers, model.hidden_size)
    wanted = set(diag) | {Size(model.num_layers, s.dim) for s in diag}
    chosen = sorted(wanted & set(trained))
    return chosen or sorted(trained)


def temperature_for(model: StarbucksModel, settings: AdaptSettings) -> float:
    if settings.temperature:
        return settings.temperature
    return 0.05 if model.config.normalized else 1.0


# --- the cache ------------------------------------------------------------------------------

@contextlib.contextmanager
def backbone_only(model: StarbucksModel):
    """The model without adaptors, giving raw (unnormalised) vectors, for the duration of the block."""
    config, adaptors = model.config, model.adaptors
    model.config = dataclasses.replace(config, normalize=False, similarity="dot")
    model.set_adaptors(None)
    try:
        yield model
    finally:
        model.config = config
        model.set_adaptors(adaptors)


def encode_pooled(model: StarbucksModel, texts: Sequence[str], layers: Sequence[int], kind: str = "passages",
                  chunk: int = 256, progress: bool = True) -> dict[int, torch.Tensor]:
    """Each text's pooled full-width vector at each layer, from the backbone alone (no adaptors, no
    normalisation), through the model's encoder: its prefixes, lengths and truncation policy."""
    from starbucks.encoder import Encoder

    layers = sorted(set(layers))
    sizes = [Size(layer, model.hidden_size) for layer in layers]
    out = {layer: torch.empty(len(texts), model.hidden_size) for layer in layers}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # chunks of similar length pad little
    with backbone_only(model), tqdm(total=len(texts), desc=f"encode {kind}", unit="text",
                                    disable=not progress) as bar:
        encoder = Encoder(model)
        encode = encoder.encode_queries if kind == "queries" else encoder.encode_passages
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            vectors = encode([texts[i] for i in rows], sizes)
            index = torch.tensor(rows)
            for size in sizes:
                out[size.layer][index] = torch.from_numpy(vectors[size])
            bar.update(len(rows))
    return out


def cached_pooled(model: StarbucksModel, texts: Sequence[str], layers: Sequence[int], cache_dir: Path | None,
                  kind: str = "passages", progress: bool = True) -> dict[int, torch.Tensor]:
    """``encode_pooled``, kept in ``cache_dir/KIND-KEY.pt`` keyed by the backbone, its settings and the texts."""
    if cache_dir is None:
        return encode_pooled(model, texts, layers, kind, progress=progress)
    h = hashlib.sha256()
    h.update(backbone_fingerprint(model).encode())
    h.update(f"{kind}|{sorted(set(layers))}|{len(texts)}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    path = Path(cache_dir) / f"{kind}-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu")
    pooled = encode_pooled(model, texts, layers, kind, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(pooled, tmp)
    tmp.replace(path)
    return pooled


def backbone_fingerprint(model: StarbucksModel) -> str:
    """The model's fingerprint without its adaptors: what the cache depends on."""
    adaptors = model.adaptors
    model.set_adaptors(None)
    try:
        return model.fingerprint()
    finally:
        model.set_adaptors(adaptors)


def vectors_from_pooled(model: StarbucksModel, pooled: dict[int, torch.Tensor], sizes: Sequence[Size],
                        rows: torch.Tensor | None = None) -> dict[Size, torch.Tensor]:
    """The vectors ``model.embed`` would give, from cached pooled vectors: the model's own
    ``pool`` (adaptors, truncation, normalisation) over one-token stand-ins for the hidden states."""
    layers = {s.layer for s in sizes}
    hidden = {layer: (pooled[layer] if rows is None else pooled[layer][rows]).unsqueeze(1) for layer in layers}
    n = next(iter(hidden.values())).shape[0]
    return model.pool(hidden, torch.ones(n, 1), sizes)


# --- maps: PCA start, orthogonal constraint ----------------------------------------------------

def pca_rotation(vectors: torch.Tensor) -> torch.Tensor:
    """The orthogonal matrix whose rows are the principal directions of the normalised vectors,
    most variance first (signs fixed so each row's largest coordinate is positive)."""
    x = F.normalize(vectors.double(), dim=-1)
    x = x - x.mean(0)
    _, eigvecs = torch.linalg.eigh(x.T @ x)
    rows = eigvecs.flip(-1).T
    signs = torch.sign(rows.gather(1, rows.abs().argmax(1, keepdim=True)))
    return (rows * signs).float()


class RotatedOrthogonal(nn.Module):
    """W = expm(A - A^T) @ Q0: always orthogonal, equal to Q0 while A is zero."""

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.register_buffer("start", start.clone())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.matrix_exp(a - a.T) @ self.start


def initial_adaptors(model: StarbucksModel, passages: dict[int, torch.Tensor], settings: AdaptSettings,
                     layers: Sequence[int]) -> Adaptors:
    """Trainable adaptors for ``layers``, each map at its layer's PCA rotation (the shared map at the
    rotation of every layer's vectors together); the last layer's constrained orthogonal if asked."""
    last = model.num_layers
    orthogonal = (last,) if settings.orthogonal_last and last in layers and not settings.shared else ()
    if settings.orthogonal_last and settings.shared:
        orthogonal = tuple(layers)  # one map for all: orthogonal everywhere or nowhere
    spec = AdaptorSpec(layers=tuple(layers), width=model.hidden_size, kind=settings.kind, bias=settings.bias,
                       shared=settings.shared, mlp_hidden=(settings.mlp_hidden or model.hidden_size) if
                       settings.kind == "mlp" else 0, orthogonal=orthogonal)
    adaptors = Adaptors(spec)
    names = ["shared"] if spec.shared else [str(layer) for layer in spec.layers]
    for name in names:
        fitted = [passages[int(name)]] if name != "shared" else [passages[layer] for layer in layers]
        rotation = pca_rotation(torch.cat([F.normalize(v, dim=-1) for v in fitted]))
        m = adaptors.maps[name]
        with torch.no_grad():
            m.linear.weight.copy_(rotation)
        if (name == "shared" and orthogonal) or (name != "shared" and int(name) in orthogonal):
            parametrize.register_parametrization(m.linear, "weight", RotatedOrthogonal(rotation))
            with torch.no_grad():
                m.linear.parametrizations.weight.original.zero_()
            for p in list(m.parameters()):
                if p is not m.linear.parametrizations.weight.original:
                    p.requires_grad_(False)  # bias and MLP stay at zero: the map stays a rotation
    return adaptors


def plain_adaptors(trainable: Adaptors) -> Adaptors:
    """A copy with constraints folded into plain weights: what is saved, traced and served."""
    plain = copy.deepcopy(trainable)
    for m in plain.maps.values():
        if parametrize.is_parametrized(m.linear, "weight"):
            parametrize.remove_parametrizations(m.linear, "weight", leave_parametrized=True)
    return plain.requires_grad_(False).eval()


# --- batches and steps ---------------------------------------------------------------------------

@dataclasses.dataclass
class TrainingSet:
    """Cached vectors: passages, optional queries, and each judged query's positive passage rows."""

    passages: dict[int, torch.Tensor]
    queries: dict[int, torch.Tensor] | None = None
    positives: list[list[int]] | None = None  # per query row, judged-relevant passage rows ([] = unjudged)

    @property
    def num_passages(self) -> int:
        return next(iter(self.passages.values())).shape[0]

    @functools.cached_property
    def label_free_queries(self) -> dict[int, torch.Tensor]:
        """What label-free steps draw queries from: the passages, then the queries (rows past the passages)."""
        if self.queries is None:
            return self.passages
        return {layer: torch.cat([self.passages[layer], self.queries[layer]]) for layer in self.passages}

    @functools.cached_property
    def judged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Judged query rows, and every judged (query row, passage row) pair as ``query * passages + passage``."""
        positives = self.positives or []
        rows = torch.tensor([i for i, pos in enumerate(positives) if pos], dtype=torch.long)
        keys = torch.tensor(sorted(i * self.num_passages + p for i, pos in enumerate(positives) for p in pos),
                            dtype=torch.long)
        return rows, keys


def step_generator(seed: int, step: int) -> torch.Generator:
    """Batch ``step``'s random draws depend on (seed, step) only, so a resumed run draws the same."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def teacher_scores(model: StarbucksModel, qv: torch.Tensor, pv: torch.Tensor, temperature: float) -> torch.Tensor:
    """The frozen backbone's full-size scores (raw last-layer vectors, normalised as the model does)."""
    if model.config.normalized:
        qv, pv = F.normalize(qv, dim=-1), F.normalize(pv, dim=-1)
    return qv @ pv.T / temperature


def step_losses(model: StarbucksModel, data: TrainingSet, sizes: list[Size], settings: AdaptSettings,
                step: int) -> dict[str, torch.Tensor]:
    """The losses of one step: label-free KL on passages (and unjudged queries) as queries, plus CE + KL
    on judged queries with their positives, each summed into one entry per size."""
    g = step_generator(settings.seed, step)
    temperature = temperature_for(model, settings)
    last = model.num_layers
    n = data.num_passages
    # Label-free: queries from the passages (and queries, if cached), scored against sampled passages.
    pool = data.label_free_queries
    q_rows = torch.randint(0, pool[last].shape[0], (settings.queries_per_step,), generator=g)
    p_rows = torch.randint(0, n, (settings.passages_per_step,), generator=g)
    mask = q_rows.unsqueeze(1) == p_rows.unsqueeze(0)  # a passage is never scored against itself
    q = vectors_from_pooled(model, pool, sizes, q_rows)
    p = vectors_from_pooled(model, data.passages, sizes, p_rows)
    teacher = teacher_scores(model, pool[last][q_rows], data.passages[last][p_rows], temperature)
    losses = adaptor_losses(q, p, teacher, temperature, mask=mask, kl_weight=settings.kl_weight)
    # Supervised: judged queries, each with one of its positives at its own column, then sampled passages.
    judged, keys = data.judged
    if len(judged):
        rows = judged[torch.randint(0, len(judged), (settings.queries_per_step,), generator=g)]
        pos_lists = [data.positives[r] for r in rows.tolist()]
        chosen = torch.tensor([pos[int(torch.randint(0, len(pos), (1,), generator=g))] for pos in pos_lists])
        cand = torch.cat([chosen, torch.randint(0, n, (settings.passages_per_step,), generator=g)])
        # Passages judged relevant to a query are masked among its negatives; its own positive is not.
        lmask = torch.isin(rows.unsqueeze(1) * n + cand.unsqueeze(0), keys)
        lmask[torch.arange(len(rows)), torch.arange(len(rows))] = False
        q = vectors_from_pooled(model, data.queries, sizes, rows)
        p = vectors_from_pooled(model, data.passages, sizes, cand)
        teacher = teacher_scores(model, data.queries[last][rows], data.passages[last][cand], temperature)
        supervised = adaptor_losses(q, p, teacher, temperature, labelled=True, mask=lmask,
                                    ce_weight=settings.ce_weight, kl_weight=settings.kl_weight)
        losses = {k: losses[k] + supervised[k] for k in losses}
    return losses


def train_adaptors(model: StarbucksModel, data: TrainingSet, settings: AdaptSettings,
                   state_path: Path | None = None, progress: bool = True) -> tuple[Adaptors, list[dict]]:
    """Train adaptors on cached vectors; with ``state_path``, checkpoint there and resume from it.

    Returns the plain (constraint-free) adaptors and the log: one entry of per-size losses per
    logged step. ``model`` keeps the adaptors it had.
    """
    sizes = train_sizes(model, settings)
    layers = sorted({s.layer for s in sizes} | {model.num_layers})
    missing = [layer for layer in layers if layer not in data.passages]
    if missing:
        raise StarbucksError(f"adapt: the cache has no vectors for layers {missing}")
    torch.manual_seed(settings.seed)
    adaptors = initial_adaptors(model, data.passages, settings, layers)
    optimizer = torch.optim.Adam([p for p in adaptors.parameters() if p.requires_grad], lr=settings.learning_rate)
    start, log = 0, []
    if state_path is not None and Path(state_path).is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["settings"] != settings.to_dict():
            raise StarbucksError(
                f"{state_path}: a checkpoint of a run with other settings; use another --out or remove it"
            )
        adaptors.load_state_dict(state["adaptors"])
        optimizer.load_state_dict(state["optimizer"])
        start, log = state["step"], state["log"]
    shown = [s for s in sizes if s in set(diagonal(model.num_layers, model.hidden_size))] or sizes[:6]
    before = model.adaptors
    model.set_adaptors(adaptors)
    try:
        with tqdm(total=settings.steps, initial=start, desc="adapt", unit="step", disable=not progress) as bar:
            for step in range(start, settings.steps):
                with parametrize.cached():  # an orthogonal map is computed once a step, not once a use
                    losses = step_losses(model, data, sizes, settings, step)
                    total = sum(losses.values())
                    optimizer.zero_grad()
                    total.backward()
                for group in optimizer.param_groups:  # cosine decay to zero over the run
                    group["lr"] = settings.learning_rate * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
                optimizer.step()
                entry = {"step": step + 1, "loss": total.item(), **{k: v.item() for k, v in losses.items()}}
                log.append(entry)
                bar.set_postfix({str(s): f"{entry[str(s)]:.3f}" for s in shown}, refresh=False)
                bar.update(1)
                done = step + 1
                if state_path is not None and (done % settings.checkpoint_every == 0 or done == settings.steps):
                    save_state(state_path, adaptors, optimizer, done, log, settings)
    finally:
        model.set_adaptors(before)
    return plain_adaptors(adaptors), log


def save_state(path: Path, adaptors: Adaptors, optimizer, step: int, log: list[dict], settings: AdaptSettings) -> None:
    """Write the checkpoint atomically (a temporary file renamed over the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    torch.save({"adaptors": adaptors.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "log": log, "settings": settings.to_dict()}, tmp)
    tmp.replace(path)


# --- the command ---------------------------------------------------------------------------------

def read_corpus_texts(corpus: str | Path) -> tuple[list[str], list[str]]:
    """Docids and texts of a corpus's non-empty documents; a corpus with no text is an InputError."""
    from starbucks.corpus import iter_corpus, resolve_corpus

    ids, texts = [], []
    for doc in iter_corpus(corpus):
        if doc.text.strip():
            ids.append(doc.docid)
            texts.append(doc.text)
    if len(texts) < 2:
        raise InputError(f"{'no' if not texts else 'only one'} document with text to adapt on",
                         resolve_corpus(corpus))
    return ids, texts


def read_judged_queries(topics: str | Path, qrels: str | Path | None, docids: Sequence[str]
                        ) -> tuple[list[str], list[list[int]] | None]:
    """Query texts and, with qrels, each query's relevant passage rows (judged documents absent
    from the corpus are ignored; a qrels file matching none of them is an InputError)."""
    from starbucks.topics import read_qrels, read_topics

    topics_by_id = read_topics(topics)
    if not qrels:
        return list(topics_by_id.values()), None
    judgements = read_qrels(qrels)
    row = {d: i for i, d in enumerate(docids)}
    texts, positives = [], []
    for qid, text in topics_by_id.items():
        texts.append(text)
        positives.append(sorted(row[d] for d, grade in judgements.get(qid, {}).items() if grade > 0 and d in row))
    if not any(positives):
        raise InputError("no judged-relevant document of these queries is in the corpus", qrels)
    return texts, positives


def adapt(corpus: str | Path, out: str | Path, model: str | Path | StarbucksModel | None = None,
          settings: AdaptSettings | None = None, queries: str | Path | None = None,
          qrels: str | Path | None = None, progress: bool = True) -> Path:
    """Adapt ``model`` (default: the base model) to ``corpus``; write the adapted model folder ``out``."""
    settings = settings or AdaptSettings()
    out = Path(out)
    if isinstance(model, StarbucksModel):
        loaded = model
    else:
        from starbucks.model import base_model_path

        loaded = StarbucksModel.load(model if model is not None else base_model_path(), device="cpu")
    sizes = train_sizes(loaded, settings)  # sizes beyond the model fail here, before any encoding
    if qrels and not queries:
        raise StarbucksError("adapt: --qrels needs --queries")
    docids, texts = read_corpus_texts(corpus)
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    layers = sorted({s.layer for s in sizes} | {loaded.num_layers})
    config = loaded.config
    data = TrainingSet(cached_pooled(loaded, texts, layers, work, "passages", progress))
    if queries:
        q_texts, data.positives = read_judged_queries(queries, qrels, docids)
        data.queries = cached_pooled(loaded, q_texts, layers, work, "queries", progress)
    adaptors, log = train_adaptors(loaded, data, settings, work / STATE_NAME, progress)
    adaptors.spec.notes.update(corpus=str(corpus), passages=len(texts), steps=settings.steps,
                               queries=str(queries or ""), qrels=str(qrels or ""))
    config_before, adaptors_before = loaded.config, loaded.adaptors
    loaded.config = dataclasses.replace(config, sizes=tuple(model_sizes(loaded, sizes)))
    loaded.set_adaptors(adaptors)
    try:
        loaded.save(out)
    finally:
        loaded.config = config_before
        loaded.set_adaptors(adaptors_before)
    (work / "adapt.json").write_text(json.dumps({"settings": settings.to_dict(), "final": log[-1] if log else None},
                                                indent=2) + "\n")
    return out
