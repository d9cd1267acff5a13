"""The student model a run trains: loaded, cut (separate baseline) and given its saved settings."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from starbucks.config import ModelConfig
from starbucks.errors import InputError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size, diagonal, parse_sizes
from training.config import TrainConfig
from training.losses.mrl import mrl_sizes


def cut_encoder(model: StarbucksModel, depth: int, config: ModelConfig) -> StarbucksModel:
    """The encoder's first ``depth`` layers as a model of its own (the 'separate' baseline)."""
    backbone = model.backbone
    backbone.encoder.layer = nn.ModuleList(list(backbone.encoder.layer)[:depth])
    backbone.config.num_hidden_layers = depth
    return StarbucksModel(backbone, model.tokenizer, config, model.name)


def configured_sizes(cfg: TrainConfig, model: StarbucksModel) -> list[Size]:
    """The config's size list (default: the diagonal scaled to the backbone), checked against it."""
    sizes = parse_sizes(cfg.sizes) if cfg.sizes else diagonal(model.num_layers, model.hidden_size)
    model.check_sizes(sizes)
    return sizes


def trained_sizes(cfg: TrainConfig, model: StarbucksModel) -> list[Size]:
    """The sizes the method trains, recorded in the saved model's starbucks.json."""
    sizes = configured_sizes(cfg, model)
    if cfg.method == "full":
        return [Size(model.num_layers, model.hidden_size)]
    if cfg.method == "mrl":
        return mrl_sizes(sizes, model.num_layers)
    if cfg.method == "separate":
        size = Size.parse(cfg.separate_size)
        model.check_sizes([size])
        return [size]
    return sizes


def load_student(cfg: TrainConfig, checkpoint: Path | None = None, device: str | None = None) -> StarbucksModel:
    """The base model (or a checkpoint's), ready to train under the config's settings."""
    if checkpoint is not None:
        return StarbucksModel.load(checkpoint / "model", device=device)
    model = StarbucksModel.load(cfg.model, device=device)
    sizes = trained_sizes(cfg, model)
    settings = model.config.to_dict()
    settings.update(cfg.model_settings)
    settings["sizes"] = [str(s) for s in sizes]
    config = ModelConfig.from_dict(settings, "model_settings")
    if cfg.method == "separate":
        return cut_encoder(model, sizes[0].layer, config)
    model.config = config
    return model


def temperature(cfg: TrainConfig, model: StarbucksModel) -> float:
    """Score temperature: the config's, else 1 for dot product and 0.05 (scale 20) for cosine."""
    if cfg.temperature is not None:
        if cfg.temperature <= 0:
            raise InputError("temperature must be positive", "temperature")
        return cfg.temperature
    return 0.05 if model.config.normalized else 1.0
