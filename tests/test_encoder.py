"""The encoder against a direct transformers computation, and the published checkpoint layout."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from starbucks.encoder import Encoder
from starbucks.errors import InputError, StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size

from conftest import make_tiny_model


def direct(model: StarbucksModel, texts, layer, dim, max_length, pooling):
    """What the paper's code does: hidden_states[layer], CLS or mean, first dim coordinates."""
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model.backbone(**batch, output_hidden_states=True).hidden_states[layer]
    if pooling == "cls":
        v = hidden[:, 0]
    else:
        m = batch["attention_mask"].unsqueeze(-1).float()
        v = (hidden * m).sum(1) / m.sum(1)
    return v[:, :dim].numpy()


TEXTS = ["a short one", "a much longer passage about coffee roasting and tidal energy " * 3, "jazz"]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_every_size_matches_direct_computation(pooling):
    model = make_tiny_model(pooling=pooling)
    sizes = [Size(1, 8), Size(2, 16), Size(4, 48), Size(4, 8)]
    out = Encoder(model, batch_size=2).encode_passages(TEXTS, sizes)
    for s in sizes:
        expected = direct(model, TEXTS, s.layer, s.dim, model.config.passage_max_length, pooling)
        np.testing.assert_allclose(out[s], expected, atol=1e-5)


def test_cosine_vectors_are_renormalised_after_truncation():
    model = make_tiny_model(pooling="mean", similarity="cosine")
    out = Encoder(model).encode_queries(["coffee", "tidal energy"], [Size(2, 16), Size(4, 48)])
    for v in out.values():
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_pass_stops_at_the_deepest_layer_needed():
    model = make_tiny_model()
    calls = []
    hooks = [layer.register_forward_hook(lambda *a, i=i: calls.append(i))
             for i, layer in enumerate(model.backbone.encoder.layer)]
    Encoder(model).encode_queries(["coffee"], [Size(1, 8), Size(2, 16)])
    for h in hooks:
        h.remove()
    assert calls == [0, 1]


def test_bad_queries_and_sizes_are_clear_errors():
    model = make_tiny_model()
    enc = Encoder(model)
    with pytest.raises(InputError, match="empty"):
        enc.encode_queries(["ok", "  "], [Size(1, 8)])
    with pytest.warns(UserWarning, match="were cut"):  # past the model's maximum: cut, as passages are
        enc.encode_queries(["word " * 600], [Size(1, 8)])
    with pytest.raises(StarbucksError, match="beyond the model's 4 layers"):
        enc.encode_queries(["ok"], [Size(5, 8)])
    with pytest.raises(StarbucksError, match="beyond the model's width 48"):
        enc.encode_queries(["ok"], [Size(2, 64)])


def test_published_starbucks_layout_loads_from_the_hub_cache(tmp_path):
    """A tiny BERT saved as ``ielabgroup/Starbucks-msmarco`` in an offline HF cache: CLS of
    hidden_states[n], first d coordinates, dot product, query length 32, passage length 196."""
    model = make_tiny_model(layers=12, hidden=48)
    snapshot = tmp_path / "hub" / "models--ielabgroup--Starbucks-msmarco" / "snapshots" / ("0" * 40)
    model.backbone.save_pretrained(snapshot)
    model.tokenizer.save_pretrained(snapshot)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    texts = ["what is a starbucks embedding", "passage text " * 100]
    expected = {
        "q": direct(model, texts[:1], 4, 8, 32, "cls").tolist(),
        "p": direct(model, texts[1:], 12, 48, 196, "cls").tolist(),
    }
    script = textwrap.dedent(f"""
        import json
        from starbucks.encoder import Encoder
        from starbucks.model import StarbucksModel
        m = StarbucksModel.load("ielabgroup/Starbucks-msmarco", device="cpu")
        e = Encoder(m)
        print(json.dumps({{
            "config": m.config.to_dict(),
            "q": e.encode_queries({texts[:1]!r}, ["4x8"])[(4, 8)].tolist(),
            "p": e.encode_passages({texts[1:]!r}, ["12x48"])[(12, 48)].tolist(),
        }}))
    """)
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    cfg = got["config"]
    assert (cfg["pooling"], cfg["similarity"], cfg["normalize"]) == ("cls", "dot", False)
    assert (cfg["query_max_length"], cfg["passage_max_length"]) == (32, 196)
    assert cfg["sizes"] == ["2x2", "4x4", "6x8", "8x16", "10x32", "12x48"]
    np.testing.assert_allclose(got["q"], expected["q"], atol=1e-5)
    np.testing.assert_allclose(got["p"], expected["p"], atol=1e-5)


def test_shallow_pass_first_does_not_disturb_a_full_pass(tmp_path):
    """Depth-limited passes share the backbone's layers; order of use must not matter."""
    make_tiny_model().save(tmp_path / "m")
    model = StarbucksModel.load(tmp_path / "m", device="cpu")
    enc = Encoder(model)
    enc.encode_queries(["coffee"], [Size(1, 8)])
    full = enc.encode_passages(TEXTS, [Size(4, 48), Size(2, 16)])
    np.testing.assert_allclose(full[Size(4, 48)], direct(model, TEXTS, 4, 48, 48, "cls"), atol=1e-5)
    np.testing.assert_allclose(full[Size(2, 16)], direct(model, TEXTS, 2, 16, 48, "cls"), atol=1e-5)


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_the_base_models_name_loads_its_offline_copy(name):
    from starbucks.model import base_model_path, resolve_model_path

    assert resolve_model_path(name) == str(base_model_path())
    assert resolve_model_path("some/other-model") == "some/other-model"
    model = StarbucksModel.load(name, device="cpu")
    assert (model.num_layers, model.hidden_size, model.config.pooling) == (6, 384, "mean")


def test_the_shipped_default_model_is_maps_on_the_frozen_base_with_its_card():
    from starbucks.model import BASE_MODEL_NAME, REPO_MODELS, default_model_path
    from starbucks.sizes import diagonal

    folder = REPO_MODELS / "starbucks-minilm-l6"
    assert default_model_path() == folder
    assert not list(folder.glob("model*.safetensors"))  # no copy of the backbone's weights
    assert sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) <= 5 * 2**20
    assert "## Reproduce" in (folder / "README.md").read_text()
    model = StarbucksModel.load(device="cpu")
    base = StarbucksModel.load(BASE_MODEL_NAME, device="cpu")
    assert model.adaptors is not None and model.config.backbone == BASE_MODEL_NAME
    assert set(diagonal(6, 384)) <= set(model.config.sizes) and model.backbone.dtype == torch.float32
    texts = ["what causes tides", "Tides are caused by the gravity of the moon and the sun."]
    full, small = Size(6, 384), Size(3, 64)
    ours = Encoder(model).encode_passages(texts, [full, small])
    theirs = Encoder(base).encode_passages(texts, [full, small])
    # Layer 6's map is a rotation: full-size scores are the base model's; smaller sizes are not its cuts.
    assert np.allclose(ours[full] @ ours[full].T, theirs[full] @ theirs[full].T, atol=1e-5)
    assert not np.allclose(ours[small], theirs[small], atol=1e-3)


def test_the_srl_model_ships_by_name_in_float16_under_50_mb():
    from safetensors import safe_open

    from starbucks.model import REPO_MODELS, resolve_model_path
    from starbucks.sizes import diagonal

    folder = REPO_MODELS / "starbucks-minilm-l6-srl"
    assert resolve_model_path("starbucks-minilm-l6-srl") == str(folder)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 50 * 2**20
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert "## Reproduce" in (folder / "README.md").read_text()
    model = StarbucksModel.load("starbucks-minilm-l6-srl", device="cpu")
    assert list(model.config.sizes) == diagonal(6, 384) and model.backbone.dtype == torch.float32


def test_token_counts_are_what_encoding_counts(tiny_model):
    encoder = Encoder(tiny_model)
    queries = ["coffee", "tidal energy and the moon", "word " * 500]
    lengths = []
    encoder.encode_queries(queries, [Size(1, 8)], lengths=lengths)
    counts = encoder.token_counts(queries)
    assert lengths == counts
    assert counts[0] < counts[1] <= counts[2] == min(tiny_model.config.query_max_length, tiny_model.max_positions)
    assert counts[0] == len(tiny_model.tokenizer(tiny_model.config.query_prefix + "coffee")["input_ids"])
