"""Adaptors in the model: applied after pooling, saved and loaded, fingerprinted, bad files refused."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model, write_corpus
from starbucks.adaptors import SPEC_NAME, WEIGHTS_NAME, Adaptors, AdaptorSpec
from starbucks.errors import InputError, StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.adapt import (AdaptSettings, TrainingSet, encode_pooled, pca_rotation, train_adaptors,
                            vectors_from_pooled)

TEXTS = ["coffee roasting at home", "protein folding in cells", "tidal energy from the sea",
         "medieval castles of wales", "jazz harmony for beginners", "glacier melting rates"]


def random_adaptors(model: StarbucksModel, seed: int = 1, **spec) -> Adaptors:
    torch.manual_seed(seed)
    adaptors = Adaptors(AdaptorSpec(layers=tuple(range(1, model.num_layers + 1)), width=model.hidden_size, **spec))
    with torch.no_grad():
        for p in adaptors.parameters():
            p.copy_(torch.randn_like(p) / model.hidden_size ** 0.5)
    return adaptors


def tokens(model: StarbucksModel, texts=TEXTS) -> dict:
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def embed(model: StarbucksModel, sizes, texts=TEXTS) -> dict:
    with torch.no_grad():
        return model.embed(**tokens(model, texts), sizes=sizes)


@pytest.mark.parametrize("pooling, similarity", [("cls", "dot"), ("mean", "cosine")])
def test_sizes_are_prefixes_of_the_mapped_vector(pooling, similarity):
    model = make_tiny_model(pooling=pooling, similarity=similarity)
    full = Size(3, model.hidden_size)
    raw = embed(model, [full], )[full] if not model.config.normalized else None
    with torch.no_grad():
        t = tokens(model)
        hidden = model.hidden_states(**t, depth=3)
        pooled = model.pool_layer(hidden[3], t["attention_mask"], 3)
    model.set_adaptors(random_adaptors(model))
    with torch.no_grad():
        mapped = model.adaptors(pooled, 3)
        assert torch.allclose(model.pool_layer(hidden[3], t["attention_mask"], 3), mapped)
        assert torch.allclose(model.pool_layer(hidden[3], t["attention_mask"], 3, adapt=False), pooled)
    got = embed(model, [Size(3, 16), full])
    expected = mapped[:, :16]
    if model.config.normalized:
        expected = F.normalize(expected, dim=-1)
    assert torch.allclose(got[Size(3, 16)], expected, atol=1e-6)
    if raw is not None:
        assert not torch.allclose(got[full], raw, atol=1e-3)  # the map is really applied


@pytest.mark.parametrize("spec", [{}, {"bias": True}, {"kind": "mlp", "mlp_hidden": 8}, {"shared": True}])
def test_save_load_round_trip(tmp_path, spec):
    model = make_tiny_model(pooling="mean", similarity="cosine")
    model.set_adaptors(random_adaptors(model, **spec))
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS_NAME).is_file() and (tmp_path / "m" / SPEC_NAME).is_file()
    loaded = StarbucksModel.load(tmp_path / "m", device="cpu")
    assert loaded.adaptors.spec == model.adaptors.spec
    sizes = [Size(1, 8), Size(2, 16), Size(4, 48)]
    a, b = embed(model, sizes), embed(loaded, sizes)
    for size in sizes:
        assert torch.allclose(a[size], b[size], atol=1e-6)
    assert loaded.fingerprint() == model.fingerprint()


def test_folder_without_adaptors_loads_as_before(tiny_model_dir):
    model = StarbucksModel.load(tiny_model_dir, device="cpu")
    assert model.adaptors is None
    plain = embed(model, [Size(4, 48)])[Size(4, 48)]
    model.set_adaptors(random_adaptors(model))
    model.set_adaptors(None)
    assert torch.equal(embed(model, [Size(4, 48)])[Size(4, 48)], plain)


def maps_only_folder(tmp_path, model, backbone: str):
    """A folder with settings naming ``backbone``, the tokenizer and the maps, but no weights."""
    import dataclasses

    folder = tmp_path / "maps-only"
    folder.mkdir()
    dataclasses.replace(model.config, backbone=backbone).save(folder)
    model.tokenizer.save_pretrained(folder)
    model.adaptors.save(folder)
    return folder


def test_a_folder_naming_its_backbone_loads_the_same_model(tmp_path):
    model = make_tiny_model(pooling="mean", similarity="cosine")
    model.save(tmp_path / "backbone")  # the weights, without maps
    model.set_adaptors(random_adaptors(model))
    folder = maps_only_folder(tmp_path, model, "../backbone")
    assert not any(folder.glob("*.safetensors")) or {p.name for p in folder.glob("*.safetensors")} == {WEIGHTS_NAME}
    loaded = StarbucksModel.load(folder, device="cpu")
    sizes = [Size(1, 8), Size(4, 48)]
    a, b = embed(model, sizes), embed(loaded, sizes)
    assert all(torch.equal(a[s], b[s]) for s in sizes)
    # Where the weights live does not change what the vectors mean: same fingerprint as a full copy.
    model.save(tmp_path / "full")
    assert loaded.fingerprint() == StarbucksModel.load(tmp_path / "full", device="cpu").fingerprint()
    assert loaded.config.backbone == "../backbone" and loaded.name == str(folder)  # named after its folder
    loaded.save(tmp_path / "copy")  # a copy holds the weights, so it names no backbone
    assert "backbone" not in json.loads((tmp_path / "copy" / "starbucks.json").read_text())
    assert "backbone" not in json.loads((tmp_path / "full" / "starbucks.json").read_text())


def test_a_backbone_that_cannot_be_found_names_the_settings_file(tmp_path):
    model = make_tiny_model(pooling="mean", similarity="cosine")
    model.set_adaptors(random_adaptors(model))
    folder = maps_only_folder(tmp_path, model, str(tmp_path / "nowhere"))
    with pytest.raises(StarbucksError, match="backbone named in .*starbucks.json"):
        StarbucksModel.load(folder, device="cpu")


def test_fingerprint_changes_with_a_map():
    model = make_tiny_model()
    base = model.fingerprint()
    model.set_adaptors(random_adaptors(model, seed=1))
    first = model.fingerprint()
    model.set_adaptors(random_adaptors(model, seed=2))
    second = model.fingerprint()
    changed = random_adaptors(model, seed=2)
    with torch.no_grad():
        changed.maps["2"].linear.weight[0, 0] += 1e-3  # one coordinate of one layer's map
    model.set_adaptors(changed)
    assert len({base, first, second, model.fingerprint()}) == 4
    model.set_adaptors(None)
    assert model.fingerprint() == base


def write_bad(tmp_path, model, change) -> str:
    folder = tmp_path / "bad"
    model.set_adaptors(random_adaptors(model))
    model.save(folder)
    change(folder)
    return folder


def test_wrong_shape_is_refused_with_the_file_named(tmp_path):
    from safetensors.torch import load_file, save_file

    model = make_tiny_model()

    def shrink(folder):
        tensors = load_file(str(folder / WEIGHTS_NAME))
        tensors["maps.3.linear.weight"] = tensors["maps.3.linear.weight"][:, :40].contiguous()
        save_file(tensors, str(folder / WEIGHTS_NAME))

    folder = write_bad(tmp_path, model, shrink)
    with pytest.raises(InputError, match=r"maps.3.linear.weight has shape \[48, 40\], expected \[48, 48\]") as e:
        StarbucksModel.load(folder, device="cpu")
    assert str(folder / WEIGHTS_NAME) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d.update(width=64), "adaptors are 64 wide but the model's width is 48"),
    (lambda d: d.update(layers=[1, 2, 3, 4, 5]), "adaptor for layer 5 but the model has 4 layers"),
    (lambda d: d.update(kind="conv"), "adaptor kind must be one of"),
    (lambda d: d.update(colour="blue"), "unknown adaptor settings"),
    (lambda d: d.update(bias=True), "tensors do not match adaptors.json: missing"),
])
def test_bad_spec_is_refused(tmp_path, edit, problem):
    model = make_tiny_model()

    def rewrite(folder):
        spec = json.loads((folder / SPEC_NAME).read_text())
        edit(spec)
        (folder / SPEC_NAME).write_text(json.dumps(spec))

    folder = write_bad(tmp_path, model, rewrite)
    with pytest.raises(InputError, match=problem) as e:
        StarbucksModel.load(folder, device="cpu")
    assert str(folder) in str(e.value)


def test_half_an_adaptor_pair_or_bad_json_is_refused(tmp_path):
    model = make_tiny_model()
    folder = write_bad(tmp_path, model, lambda d: (d / SPEC_NAME).unlink())
    with pytest.raises(InputError, match="adaptor weights without their adaptors.json"):
        StarbucksModel.load(folder, device="cpu")
    folder = write_bad(tmp_path, model, lambda d: (d / SPEC_NAME).write_text("{not json"))
    with pytest.raises(InputError, match="not valid JSON"):
        StarbucksModel.load(folder, device="cpu")
    folder = write_bad(tmp_path, model, lambda d: (d / WEIGHTS_NAME).write_bytes(b"garbage"))
    with pytest.raises(InputError, match="cannot read adaptor weights"):
        StarbucksModel.load(folder, device="cpu")


def test_adaptors_that_do_not_fit_the_model_are_refused():
    model = make_tiny_model()
    other = make_tiny_model(hidden=32)
    with pytest.raises(StarbucksError, match="do not fit"):
        model.set_adaptors(random_adaptors(other))


def test_pca_rotation_is_orthogonal_and_orders_variance():
    torch.manual_seed(0)
    x = torch.randn(500, 12) * torch.linspace(0.1, 3, 12)
    r = pca_rotation(x)
    assert torch.allclose(r @ r.T, torch.eye(12), atol=1e-5)
    y = F.normalize(x, dim=-1) @ r.T
    var = y.var(0)
    assert torch.all(var[:-1] >= var[1:] - 1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny cosine model and adaptors trained on its cached passage vectors (orthogonal and free last map)."""
    torch.set_num_threads(1)
    model = make_tiny_model(pooling="mean", similarity="cosine")
    corpus = write_corpus(tmp_path_factory.mktemp("adapt") / "c.jsonl", 120)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    data = TrainingSet(encode_pooled(model, texts, range(1, 5), progress=False))
    short = dict(steps=30, queries_per_step=16, passages_per_step=64)
    orth, _ = train_adaptors(model, data, AdaptSettings(**short), progress=False)
    free, _ = train_adaptors(model, data, AdaptSettings(orthogonal_last=False, learning_rate=1e-2, **short),
                             progress=False)
    return model, texts, orth, free


def test_orthogonal_last_map_keeps_full_size_scores(trained):
    model, texts, orth, free = trained
    full = Size(4, model.hidden_size)
    base = embed(model, [full], texts[:20])[full]
    w = orth.linear_weight(4)
    assert torch.allclose(w @ w.T, torch.eye(model.hidden_size), atol=1e-4)
    assert not torch.allclose(w, torch.eye(model.hidden_size), atol=1e-2)  # it did move
    model.set_adaptors(orth)
    adapted = embed(model, [full, Size(4, 8)], texts[:20])
    model.set_adaptors(free)
    freed = embed(model, [full], texts[:20])[full]
    model.set_adaptors(None)
    assert torch.allclose(adapted[full] @ adapted[full].T, base @ base.T, atol=1e-5)
    assert not torch.allclose(freed @ freed.T, base @ base.T, atol=1e-3)  # a free map does change them


def test_cached_path_equals_the_model(trained):
    model, texts, orth, _ = trained
    sizes = [Size(1, 4), Size(3, 32), Size(4, 48)]
    pooled = encode_pooled(model, texts[:10], [1, 3, 4], progress=False)
    model.set_adaptors(orth)
    try:
        direct = embed(model, sizes, texts[:10])
        with torch.no_grad():
            cached = vectors_from_pooled(model, pooled, sizes)
    finally:
        model.set_adaptors(None)
    for size in sizes:
        assert torch.allclose(direct[size], cached[size], atol=1e-5)


class PoolLayer(torch.nn.Module):
    """pool_layer of one layer as a module, the way an exporter traces it."""

    def __init__(self, model: StarbucksModel, layer: int):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.pool_layer(h, mask, self.layer)


def test_adaptors_export(trained):
    """Plain modules with static shapes: pool_layer with adaptors exports as a graph and replays exactly."""
    model, texts, orth, _ = trained
    model.set_adaptors(orth)
    try:
        t = tokens(model, texts[:4])
        with torch.no_grad():
            h = model.hidden_states(**t, depth=2)[2]
            program = torch.export.export(PoolLayer(model, 2), (h, t["attention_mask"]))
            exported = program.module()(h, t["attention_mask"])
            assert torch.allclose(exported, model.pool_layer(h, t["attention_mask"], 2), atol=1e-6)
            assert not torch.allclose(exported, model.pool_layer(h, t["attention_mask"], 2, adapt=False), atol=1e-3)
    finally:
        model.set_adaptors(None)
