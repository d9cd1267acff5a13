"""Adaptors: one learned map per layer, applied to the pooled vector before truncation.

A frozen backbone's earlier layers and narrow cuts rank poorly because nothing orders
their coordinates by importance. An adaptor maps a layer's pooled full-width vector to
a new vector of the same width whose prefixes are that layer's sizes: ``4x128`` is the
first 128 coordinates of layer 4's mapped vector. Maps are plain torch modules with
static shapes (a matrix product, or a small residual MLP), so they trace into ONNX as
part of :meth:`StarbucksModel.pool_layer`.

On disk, beside the model's weights: ``adaptors.safetensors`` (the tensors) and
``adaptors.json`` (what they are). A folder without them has no adaptors.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from starbucks.errors import InputError

WEIGHTS_NAME = "adaptors.safetensors"
SPEC_NAME = "adaptors.json"
KINDS = ("linear", "mlp")
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class AdaptorSpec:
    """What the maps are: which layers, their kind and width, and how they were constrained."""

    layers: tuple[int, ...]  # layers that have a map; others pass through unchanged
    width: int  # the backbone's hidden size: every map is width -> width
    kind: str = "linear"  # "linear" (y = W x [+ b]) or "mlp" (y = W x + U gelu(V x + c))
    bias: bool = False
    shared: bool = False  # one map serves every layer in ``layers``
    mlp_hidden: int = 0  # inner width of the MLP variant (0 for linear)
    orthogonal: tuple[int, ...] = ()  # layers whose map was kept orthogonal in training (informative)
    notes: dict = dataclasses.field(default_factory=dict, compare=False)  # provenance, free-form

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted({int(layer) for layer in self.layers})))
        object.__setattr__(self, "orthogonal", tuple(sorted({int(layer) for layer in self.orthogonal})))
        if self.kind not in KINDS:
            raise ValueError(f"adaptor kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.layers or min(self.layers) < 0:
            raise ValueError(f"adaptor layers must be a non-empty list of layer numbers, not {list(self.layers)}")
        if self.width < 1:
            raise ValueError(f"adaptor width must be positive, not {self.width}")
        if self.kind == "mlp" and self.mlp_hidden < 1:
            raise ValueError("an mlp adaptor needs a positive mlp_hidden")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(layers=list(self.layers), orthogonal=list(self.orthogonal), format=FORMAT)
        return d

    @classmethod
    def from_dict(cls, d: object, source: object = None) -> "AdaptorSpec":
        if not isinstance(d, dict):
            raise InputError("expected a JSON object describing the adaptors", source)
        d = dict(d)
        if d.pop("format", FORMAT) != FORMAT:
            raise InputError(f"unsupported adaptor format (this version reads format {FORMAT})", source)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise InputError(f"unknown adaptor settings {unknown}", source)
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise InputError(str(e), source) from None


class LinearMap(nn.Module):
    """``y = W x (+ b)``, width -> width."""

    def __init__(self, width: int, bias: bool):
        super().__init__()
        self.linear = nn.Linear(width, width, bias=bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(width))
            if bias:
                self.linear.bias.zero_()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.linear(v)


class MLPMap(nn.Module):
    """``y = W x (+ b) + U gelu(V x + c)``: a linear map plus a small residual MLP (U starts at zero)."""

    def __init__(self, width: int, bias: bool, hidden: int):
        super().__init__()
        self.linear = nn.Linear(width, width, bias=bias)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(width))
            if bias:
                self.linear.bias.zero_()
            self.down.weight.zero_()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.linear(v) + self.down(nn.functional.gelu(self.up(v)))


def make_map(spec: AdaptorSpec) -> nn.Module:
    if spec.kind == "mlp":
        return MLPMap(spec.width, spec.bias, spec.mlp_hidden)
    return LinearMap(spec.width, spec.bias)


class Adaptors(nn.Module):
    """One map per layer (or one shared map), identity at construction."""

    def __init__(self, spec: AdaptorSpec):
        super().__init__()
        self.spec = spec
        names = ["shared"] if spec.shared else [str(layer) for layer in spec.layers]
        self.maps = nn.ModuleDict({name: make_map(spec) for name in names})

    def map_for(self, layer: int) -> nn.Module | None:
        """The map applied to ``layer``'s pooled vector, or None if that layer passes through."""
        if layer not in self.spec.layers:
            return None
        return self.maps["shared" if self.spec.shared else str(layer)]

    def forward(self, v: torch.Tensor, layer: int) -> torch.Tensor:
        """Map one layer's pooled full-width vectors ``[batch, width]`` (computed in the maps' dtype)."""
        m = self.map_for(layer)
        if m is None:
            return v
        dtype = m.linear.weight.dtype
        return m(v.to(dtype)).to(v.dtype)

    def linear_weight(self, layer: int) -> torch.Tensor | None:
        """The matrix W of ``layer``'s map (its linear part), or None if the layer has no map."""
        m = self.map_for(layer)
        return None if m is None else m.linear.weight

    def save(self, folder: str | Path) -> None:
        """Write ``adaptors.safetensors`` and ``adaptors.json`` into a model folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_NAME))
        (folder / SPEC_NAME).write_text(json.dumps(self.spec.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, width: int | None = None, num_layers: int | None = None) -> "Adaptors | None":
        """The adaptors of a model folder, None if it has none; a file that does not fit is an InputError.

        ``width`` and ``num_layers`` are the backbone's, checked against the spec.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        spec_path, weights_path = folder / SPEC_NAME, folder / WEIGHTS_NAME
        if not spec_path.is_file() and not weights_path.is_file():
            return None
        if not spec_path.is_file():
            raise InputError(f"adaptor weights without their {SPEC_NAME}", weights_path)
        if not weights_path.is_file():
            raise InputError(f"adaptor settings without their {WEIGHTS_NAME}", spec_path)
        try:
            spec = AdaptorSpec.from_dict(json.loads(spec_path.read_text()), spec_path)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e})", spec_path) from None
        if width is not None and spec.width != width:
            raise InputError(f"adaptors are {spec.width} wide but the model's width is {width}", spec_path)
        if num_layers is not None and max(spec.layers) > num_layers:
            raise InputError(f"adaptor for layer {max(spec.layers)} but the model has {num_layers} layers", spec_path)
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"cannot read adaptor weights ({e})", weights_path) from None
        adaptors = cls(spec)
        expected = adaptors.state_dict()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            what = f"missing {missing}" if missing else f"unexpected {extra}"
            raise InputError(f"tensors do not match {SPEC_NAME}: {what}", weights_path)
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise InputError(f"{name} has shape {list(tensor.shape)}, expected {list(expected[name].shape)}",
                                 weights_path)
        adaptors.load_state_dict(tensors)
        return adaptors.eval()


def has_adaptors(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / SPEC_NAME).is_file() or (folder / WEIGHTS_NAME).is_file()
