"""Per-model settings that decide what an embedding means.

Stored as ``starbucks.json`` beside the weights. A folder without one gets its
settings from sentence-transformers files where present, or from a built-in
preset for known published checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from starbucks.errors import InputError
from starbucks.sizes import Size, diagonal, parse_sizes

CONFIG_NAME = "starbucks.json"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """How to turn hidden states into vectors and compare them."""

    sizes: tuple[Size, ...]  # the sizes the model was trained for
    pooling: str = "cls"  # "cls" or "mean"
    normalize: bool = False  # L2-normalise each size's vector after truncation
    similarity: str = "dot"  # "dot" or "cosine"
    query_max_length: int = 32
    passage_max_length: int = 196
    query_prefix: str = ""
    passage_prefix: str = ""
    # Where the weights are, when the folder holds none of its own: a model name or a path
    # (relative to the folder). A frozen backbone plus adaptors ships as settings and maps only.
    backbone: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(parse_sizes(self.sizes)))
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', not {self.pooling!r}")
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', not {self.similarity!r}")
        if self.query_max_length < 1 or self.passage_max_length < 1:
            raise ValueError("max lengths must be positive")

    @property
    def normalized(self) -> bool:
        """Whether stored vectors are unit length (so dot product is cosine)."""
        return self.normalize or self.similarity == "cosine"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sizes"] = [str(s) for s in self.sizes]
        if not self.backbone:
            del d["backbone"]  # absent unless set, so folders that hold their weights read as before
        return d

    def meaning(self) -> dict:
        """The settings that decide what a vector means (where the weights live is not one)."""
        d = self.to_dict()
        d.pop("backbone", None)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: object = None) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise InputError(f"unknown model settings {sorted(unknown)}", source)
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise InputError(str(e), source) from None

    def save(self, folder: str | Path) -> None:
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# Published checkpoints whose folders carry no starbucks.json (sizes: the diagonal).
PRESETS: dict[str, dict] = {
    "ielabgroup/Starbucks-msmarco": dict(
        pooling="cls", normalize=False, similarity="dot", query_max_length=32, passage_max_length=196,
    ),
    "ielabgroup/Starbucks_STS": dict(
        pooling="mean", normalize=True, similarity="cosine", query_max_length=128, passage_max_length=128,
    ),
}


def infer_config(name: str, folder: Path | None, num_layers: int, hidden: int) -> ModelConfig:
    """Find the settings for a model: starbucks.json, a preset, or ST files."""
    if folder is not None and (folder / CONFIG_NAME).is_file():
        path = folder / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e})", path) from None
        return ModelConfig.from_dict(data, path)
    if name in PRESETS:
        return ModelConfig(sizes=diagonal(num_layers, hidden), **PRESETS[name])
    settings: dict = dict(sizes=[Size(num_layers, hidden)])
    if folder is not None and (folder / "modules.json").is_file():
        # A sentence-transformers folder: read its pooling, normalisation and length.
        modules = json.loads((folder / "modules.json").read_text())
        kinds = " ".join(m.get("type", "") for m in modules)
        pool_cfg = folder / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            pool = json.loads(pool_cfg.read_text())
            settings["pooling"] = "cls" if pool.get("pooling_mode_cls_token") else "mean"
        if "Normalize" in kinds:
            settings.update(normalize=True, similarity="cosine")
        st_cfg = folder / "sentence_bert_config.json"
        if st_cfg.is_file():
            length = json.loads(st_cfg.read_text()).get("max_seq_length")
            if length:
                settings.update(query_max_length=int(length), passage_max_length=int(length))
    return ModelConfig(**settings)
