"""The ONNX Runtime encoder: same vectors as torch per layer, only the layers a plan needs, threads honoured."""
from __future__ import annotations

import numpy as np
import pytest

from starbucks.encoder import Encoder, make_encoder
from starbucks.errors import StarbucksError
from starbucks import onnx_encoder
from starbucks.onnx_encoder import EXPORT_INFO, OnnxEncoder, exit_graph, graph_folder
from starbucks.sizes import Size
from tests.conftest import make_tiny_model

QUERIES = ["coffee roasting", "protein folding in tidal energy", "jazz harmony and medieval castles of the north",
           "a"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(params=["cls", "mean"])
def model(request, tmp_path, monkeypatch):
    monkeypatch.setenv("STARBUCKS_CACHE", str(tmp_path / "cache"))
    return make_tiny_model(pooling=request.param, similarity="cosine" if request.param == "mean" else "dot")


def test_fp32_matches_torch_at_every_layer(model):
    sizes = [Size(layer, 48) for layer in range(1, 5)] + [Size(2, 16), Size(4, 8)]
    torch_out = Encoder(model).encode_queries(QUERIES, sizes)
    onnx_out = OnnxEncoder(model, "fp32").encode_passages(QUERIES, sizes)
    onnx_q = OnnxEncoder(model, "fp32").encode_queries(QUERIES, sizes)
    for s in sizes:
        np.testing.assert_allclose(onnx_q[s], torch_out[s], atol=2e-5, rtol=1e-4)
        assert onnx_out[s].dtype == np.float32 and onnx_out[s].shape == (len(QUERIES), s.dim)


def op_types(folder, name="layer1"):
    import onnx

    return [node.op_type for node in onnx.load(str(folder / f"{name}.onnx")).graph.node]


def test_bert_attention_exports_as_one_fused_operator(model):
    import json

    folder = graph_folder(model, "fp32")
    assert json.loads((folder / EXPORT_INFO).read_text())["fused_attention"] is True
    for number in range(1, 5):
        ops = op_types(folder, f"layer{number}")
        assert ops.count("Attention") == 1 and "Softmax" not in ops and "Transpose" not in ops
    assert op_types(graph_folder(model, "int8")).count("QAttention") == 1


def test_other_backbones_export_their_layers_as_traced(model, monkeypatch):
    monkeypatch.setattr(onnx_encoder, "fusable", lambda backbone: False)
    sizes = [Size(1, 48), Size(4, 16)]
    traced = OnnxEncoder(model, "fp32")
    assert "Attention" not in op_types(traced.folder) and "Softmax" in op_types(traced.folder)
    torch_out = Encoder(model).encode_queries(QUERIES, sizes)
    got = traced.encode_queries(QUERIES, sizes)
    for s in sizes:
        np.testing.assert_allclose(got[s], torch_out[s], atol=2e-5, rtol=1e-4)


def test_quantising_logs_nothing_and_leaves_the_programs_logging_alone(model, caplog):
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    graph_folder(model, "int8")
    assert root.handlers == handlers and root.level == level
    assert not [r for r in caplog.records if "quantization" in r.getMessage()]


def test_int8_stays_close_to_torch(model):
    sizes = [Size(2, 16), Size(4, 48)]
    torch_out = Encoder(model).encode_queries(QUERIES, sizes)
    int8 = make_encoder(model, "onnx-int8", threads=1).encode_queries(QUERIES, sizes)
    for s in sizes:
        assert cosines(int8[s], torch_out[s]).min() >= 0.97  # per-channel int8: the stated tolerance
        assert not np.allclose(int8[s], torch_out[s], atol=1e-6)  # it really is quantised


def test_a_plan_ending_at_layer_n_runs_n_layers(model):
    encoder = OnnxEncoder(model, "fp32")
    encoder.encode_queries(["coffee"], [Size(2, 16), Size(1, 8)])
    assert encoder.runs == {"embed": 1, "layer1": 1, "layer2": 1, "layer3": 0, "layer4": 0}
    encoder.encode_queries(["coffee"], [Size(4, 48)])
    assert encoder.runs == {"embed": 2, "layer1": 2, "layer2": 2, "layer3": 1, "layer4": 1}


def test_a_layer_pools_only_where_a_size_needs_it(model):
    encoder = OnnxEncoder(model, "fp32")
    got = encoder.encode_queries(QUERIES, [Size(2, 16), Size(4, 48)])
    assert list(encoder.graphs) == [(2, 4)]
    session = encoder.graphs[(2, 4)]
    assert [o.name for o in session.get_outputs()] == ["pooled2", "pooled4"]
    graph = exit_graph(encoder.folder, (2, 4))
    produced = {name for node in graph.graph.node for name in node.output}
    assert {f"layer{n}/pooled" for n in range(1, 5)} & produced == {"layer2/pooled", "layer4/pooled"}
    assert not [name for name in produced if name.startswith("layer5/")]
    # Pooling at two exits in one run gives what one exit at a time gives.
    chained = OnnxEncoder(model, "fp32")
    for s in got:
        np.testing.assert_array_equal(got[s], chained.encode_queries(QUERIES, [s])[s])


def test_exit_graphs_are_kept_up_to_a_bound(model, monkeypatch):
    monkeypatch.setattr(onnx_encoder, "EXIT_GRAPHS", 2)
    encoder = OnnxEncoder(model, "fp32")
    for sizes in ([Size(1, 8)], [Size(2, 8)], [Size(1, 8)], [Size(3, 8), Size(1, 8)]):
        encoder.encode_queries(["coffee"], sizes)
    assert list(encoder.graphs) == [(1,), (1, 3)]


def test_a_joined_exit_graph_is_saved_and_later_encoders_open_it_without_joining(model, monkeypatch):
    first = OnnxEncoder(model, "int8")
    want = first.encode_queries(QUERIES, [Size(2, 16), Size(3, 48)])
    saved = onnx_encoder.exit_file(first.folder, (2, 3))
    assert saved.is_file() and saved.name == f"exits-v{onnx_encoder.EXIT_FORMAT}-2-3.onnx"
    assert not [p for p in first.folder.iterdir() if p.name.startswith(".")]  # nothing half-written left

    def no_join(*args):
        raise AssertionError("joined again")

    monkeypatch.setattr(onnx_encoder, "exit_graph", no_join)
    got = OnnxEncoder(model, "int8").encode_queries(QUERIES, [Size(2, 16), Size(3, 48)])
    for s in want:
        np.testing.assert_array_equal(got[s], want[s])


def test_a_damaged_saved_exit_graph_is_joined_again_and_replaced(model):
    first = OnnxEncoder(model, "fp32")
    want = first.encode_queries(QUERIES, [Size(4, 48)])[Size(4, 48)]
    saved = onnx_encoder.exit_file(first.folder, (4,))
    size = saved.stat().st_size
    saved.write_bytes(saved.read_bytes()[: size // 3])  # cut short, as by a full disk
    np.testing.assert_array_equal(OnnxEncoder(model, "fp32").encode_queries(QUERIES, [Size(4, 48)])[Size(4, 48)], want)
    assert saved.stat().st_size == size


def test_an_exit_graph_that_cannot_be_saved_is_joined_in_memory(model, monkeypatch):
    def refuse(*args):
        raise OSError(30, "Read-only file system")

    with monkeypatch.context() as patched:
        patched.setattr(onnx_encoder.os, "replace", refuse)
        encoder = OnnxEncoder(model, "fp32")
        got = encoder.encode_queries(QUERIES, [Size(2, 16)])[Size(2, 16)]
    assert not onnx_encoder.exit_file(encoder.folder, (2,)).exists()
    assert not [p for p in encoder.folder.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(got, OnnxEncoder(model, "fp32").encode_queries(QUERIES, [Size(2, 16)])[Size(2, 16)])


def test_export_is_cached_by_fingerprint(model, tmp_path):
    folder = graph_folder(model, "fp32")
    assert (folder / EXPORT_INFO).is_file() and folder.parent == tmp_path / "cache" / "onnx"
    assert model.fingerprint() in folder.name
    stamp = (folder / "layer1.onnx").stat().st_mtime_ns
    assert graph_folder(model, "fp32") == folder and (folder / "layer1.onnx").stat().st_mtime_ns == stamp
    other = make_tiny_model(seed=1)
    assert graph_folder(other, "fp32") != folder
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no export left half-done


def test_threads_are_honoured(model):
    import faiss
    import torch

    encoder = make_encoder(model, "onnx", threads=1)
    assert encoder.threads == 1 and torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    options = encoder.session((1,)).get_session_options()
    assert options.intra_op_num_threads == 1
    assert make_encoder(model, "torch", threads=1).kind == "torch"


@pytest.mark.parametrize("kind, threads, message", [
    ("onnx-fp8", 1, "unknown encoder 'onnx-fp8'"),
    ("onnx", 0, "threads must be a positive integer"),
    ("onnx", 10_000, "more than the"),
])
def test_bad_encoder_settings_are_refused(model, kind, threads, message):
    with pytest.raises(StarbucksError, match=message):
        make_encoder(model, kind, threads=threads)


def test_auto_is_onnx_on_cpu(model):
    assert make_encoder(model, "auto", threads=1).kind.startswith("onnx")


def test_a_search_encodes_only_the_layers_its_plan_needs(built_index, tiny_model, monkeypatch, tmp_path):
    from retrieval import Searcher

    monkeypatch.setenv("STARBUCKS_CACHE", str(tmp_path / "cache"))
    searcher = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
    searcher.search("coffee roasting", k=5, budget="1x8:50,2x16:5")
    assert searcher.encoder.runs == {"embed": 1, "layer1": 1, "layer2": 1, "layer3": 0, "layer4": 0}
    searcher.search("coffee roasting", k=5, budget="2x16:50,4x48:5")
    assert searcher.encoder.runs["layer4"] == 1 and searcher.encoder.runs["embed"] == 2


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_fast_encoder_with_adaptors_equals_torch(tmp_path, monkeypatch, kind):
    import torch

    from starbucks.adaptors import Adaptors, AdaptorSpec

    monkeypatch.setenv("STARBUCKS_CACHE", str(tmp_path / "cache"))
    model = make_tiny_model(pooling="mean", similarity="cosine")
    adaptors = Adaptors(AdaptorSpec(layers=(1, 2, 4), width=48, kind=kind, bias=True,
                                    mlp_hidden=16 if kind == "mlp" else 0))
    torch.manual_seed(5)
    with torch.no_grad():
        for p in adaptors.parameters():
            p.add_(0.2 * torch.randn_like(p))  # away from the identity it starts at; still trainable
    model.set_adaptors(adaptors)
    sizes = [Size(1, 8), Size(2, 16), Size(3, 48), Size(4, 48)]
    torch_out = Encoder(model).encode_queries(QUERIES, sizes)
    onnx_out = OnnxEncoder(model, "fp32").encode_queries(QUERIES, sizes)
    for s in sizes:
        np.testing.assert_allclose(onnx_out[s], torch_out[s], atol=2e-5, rtol=1e-4)
    assert all(p.requires_grad for p in adaptors.parameters())  # the export left them as it found them
