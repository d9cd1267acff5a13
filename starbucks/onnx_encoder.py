"""The fast encoder: the model exported to ONNX Runtime as one graph per layer, run as one graph per exit.

The export writes the embedding graph and one graph per layer. Each layer graph takes the
previous hidden state and returns the next one plus that layer's pooled vector
(``StarbucksModel.pool_layer``, adaptors included), so any layer is an exit. At search time
the graphs a set of sizes needs are joined into one (``exit_graph``): the embedding, layers
1..n where n is the deepest size's layer, and the pooled outputs of the layers the sizes
name, nothing else. One run per batch instead of one per layer saves ONNX Runtime's per-run
overhead, and the pooling of a layer no size needs is not in the graph at all. Truncation
and normalisation happen after, as in ``StarbucksModel.pool``. A BERT layer's self-attention
is exported as ONNX Runtime's fused Attention operator (``export``).

Variants: ``fp32`` (the exported graphs) and ``int8`` (dynamic quantisation with
per-channel weight scales; per-tensor scales drift too far from fp32). The graphs are
exported once per model and cached, keyed by the model's fingerprint and the export's
format (``EXPORT_FORMAT``): beside the model
when its folder is writable (``MODEL/onnx/``), else in ``$STARBUCKS_CACHE`` (default
``~/.cache/starbucks``). An export is written to a temporary folder and renamed into
place, so concurrent first uses never see half a cache.

A joined exit graph is saved into the same folder on first use (``exits-v1-2-6.onnx`` pools at
layers 2 and 6; each holds its own copy of the weights it needs), written under a temporary name and
renamed, and later processes open that file directly. Joining graphs needs the ``onnx`` package, whose
import alone takes most of a second; a process's first search of a plan so pays only ONNX Runtime's
session set-up. A saved graph that cannot be opened is joined again and replaced; where the folder
cannot be written, the graph is joined in memory each time, as before.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from starbucks.encoder import Encoder
from starbucks.errors import StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size

VARIANTS = ("fp32", "int8")
OPSET = 17
EXPORT_INFO = "export.json"
EXPORT_FORMAT = 2  # part of a cache folder's name: 2 exports BERT attention as one fused operator
MASK_FILTER = -10000.0  # added to the attention scores of padding tokens


def cache_root(model: StarbucksModel) -> Path:
    """Where a model's exports live: ``$STARBUCKS_CACHE``, else beside a writable model folder,
    else the user cache."""
    if os.environ.get("STARBUCKS_CACHE"):
        return Path(os.environ["STARBUCKS_CACHE"]) / "onnx"
    folder = Path(model.name) if model.name else None
    if folder is not None and folder.is_dir() and os.access(folder, os.W_OK):
        return folder / "onnx"
    return Path.home() / ".cache" / "starbucks" / "onnx"


def graph_folder(model: StarbucksModel, variant: str) -> Path:
    """The exported graphs of this model and variant, exporting them first if needed."""
    if variant not in VARIANTS:
        raise StarbucksError(f"unknown ONNX variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    folder = cache_root(model) / f"{model.fingerprint()}-{variant}-v{EXPORT_FORMAT}"
    if (folder / EXPORT_INFO).is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as e:
        raise StarbucksError(f"cannot write the ONNX export cache at {folder.parent} ({e.strerror}); "
                             f"set STARBUCKS_CACHE to a writable folder") from None
    try:
        if variant == "fp32":
            export(model, work)
        else:
            quantize(graph_folder(model, "fp32"), work)
        try:
            os.rename(work, folder)
        except OSError:  # another process finished the same export first
            if not (folder / EXPORT_INFO).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def layer_names(num_layers: int) -> list[str]:
    return ["embed"] + [f"layer{i}" for i in range(1, num_layers + 1)]


def export(model: StarbucksModel, out: Path, fused: bool = True) -> None:
    """Write ``embed.onnx`` and ``layer1.onnx``.. ``layerN.onnx`` (fp32) for ``model`` into ``out``.

    With ``fused`` (and a BERT backbone, ``fusable``) a layer's self-attention is one
    ``com.microsoft`` Attention node over the joined query, key and value weights, instead of
    the dozens of projection, reshape, transpose, softmax and shape nodes the traced layer has;
    its outputs are the same to float rounding. Other backbones export their layers as traced."""
    import torch
    from torch import nn

    backbone = model.backbone
    fused = fused and fusable(backbone)

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = backbone.embeddings

        def forward(self, input_ids, attention_mask):
            hidden = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            return hidden, bias

    class Attention(torch.autograd.Function):
        """Self-attention from one joined QKV projection; exported as ONNX Runtime's fused
        ``com.microsoft`` Attention operator, computed here as BERT computes it."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, mask, heads):
            batch, tokens, width = hidden.shape
            q, k, v = (hidden @ weight + bias).split(width, dim=-1)

            def split(x):
                return x.view(batch, tokens, heads, width // heads).transpose(1, 2)

            scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(width // heads)
            scores = scores + (1.0 - mask[:, None, None, :].to(scores.dtype)) * MASK_FILTER
            return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(batch, tokens, width)

        @staticmethod
        def symbolic(g, hidden, weight, bias, mask, heads):
            mask = g.op("Cast", mask, to_i=6)  # int32: a 2-D mask of ones and zeros
            out = g.op("com.microsoft::Attention", hidden, weight, bias, mask, num_heads_i=heads,
                       mask_filter_value_f=MASK_FILTER)
            out.setType(hidden.type())
            return out

    class Layer(nn.Module):
        def __init__(self, number: int):
            super().__init__()
            self.layer = backbone.encoder.layer[number - 1]
            self.adaptors = model.adaptors  # registered, so their weights export as the graph's own
            self.number = number

            if fused:  # the joined projection, as Attention wants it: [hidden, 3 * hidden]
                attention = self.layer.attention.self
                self.register_buffer("qkv_weight", torch.cat(
                    [attention.query.weight, attention.key.weight, attention.value.weight]).T.contiguous())
                self.register_buffer("qkv_bias", torch.cat(
                    [attention.query.bias, attention.key.bias, attention.value.bias]))
                self.heads = int(backbone.config.num_attention_heads)

        def forward(self, hidden, bias, attention_mask):
            if fused:
                context = Attention.apply(hidden, self.qkv_weight, self.qkv_bias, attention_mask, self.heads)
                out = self.layer.feed_forward_chunk(self.layer.attention.output(context, hidden))
            else:
                out = self.layer(hidden, attention_mask=bias)
                out = out[0] if isinstance(out, tuple) else out
            return out, model.pool_layer(out, attention_mask, self.number)

    device, dtype = model.device, next(backbone.parameters()).dtype
    attn = backbone.config._attn_implementation
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # a traced weight that requires grad cannot become a graph constant
        p.requires_grad_(False)
    model.to("cpu").float()
    backbone.config._attn_implementation = "eager"  # an explicit additive mask, traceable
    try:
        ids = torch.randint(1000, 2000, (2, 9))
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        batch = {0: "batch", 1: "tokens"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            embed = Embed().eval()
            torch.onnx.export(embed, (ids, mask), str(out / "embed.onnx"),
                              input_names=["input_ids", "attention_mask"], output_names=["hidden", "bias"],
                              dynamic_axes={"input_ids": batch, "attention_mask": batch, "hidden": batch,
                                            "bias": {0: "batch", 3: "tokens"}},
                              opset_version=OPSET, dynamo=False)
            hidden, bias = embed(ids, mask)
            for number in range(1, model.num_layers + 1):
                layer = Layer(number).eval()
                torch.onnx.export(layer, (hidden, bias, mask), str(out / f"layer{number}.onnx"),
                                  input_names=["hidden_in", "bias", "attention_mask"],
                                  output_names=["hidden", "pooled"],
                                  dynamic_axes={"hidden_in": batch, "bias": {0: "batch", 3: "tokens"},
                                                "attention_mask": batch, "hidden": batch, "pooled": {0: "batch"}},
                                  opset_version=OPSET, dynamo=False)
                hidden, _ = layer(hidden, bias, mask)
    finally:
        backbone.config._attn_implementation = attn
        model.to(device=device, dtype=dtype)
        for p in trainable:
            p.requires_grad_(True)
    _write_info(out, model, "fp32", fused)


def quantize(fp32: Path, out: Path) -> None:
    """Dynamic int8 quantisation of every graph, with per-channel weight scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    info = json.loads((fp32 / EXPORT_INFO).read_text())
    # quantize_dynamic logs an advice per graph through the root logger, configuring it when it has no
    # handler: both are kept from the user's program.
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        for name in layer_names(info["num_layers"]):
            quantize_dynamic(str(fp32 / f"{name}.onnx"), str(out / f"{name}.onnx"),
                             per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.removeHandler(quiet)
        root.setLevel(level)
    (out / EXPORT_INFO).write_text(json.dumps({**info, "variant": "int8"}, indent=2) + "\n")


def fusable(backbone) -> bool:
    """Whether the backbone's layers are BERT encoder layers with absolute positions, whose
    self-attention exports as ONNX Runtime's fused Attention operator."""
    config = backbone.config
    return (getattr(config, "model_type", "") == "bert" and not getattr(config, "is_decoder", False)
            and getattr(config, "position_embedding_type", "absolute") == "absolute")


def _write_info(out: Path, model: StarbucksModel, variant: str, fused: bool) -> None:
    import onnxruntime
    import torch

    info = {"fingerprint": model.fingerprint(), "variant": variant, "num_layers": model.num_layers,
            "opset": OPSET, "format": EXPORT_FORMAT, "fused_attention": fused,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")


def exit_graph(folder: Path, exits: tuple[int, ...]):
    """One ONNX graph: the embedding, layers 1..max(exits) chained, and outputs ``pooled{n}`` for each
    layer n in ``exits`` (inputs ``input_ids``, ``attention_mask``). Joined from the exported graphs,
    which are left as they are; every node and weight keeps its values, so its outputs are the chained
    graphs' outputs."""
    import onnx
    from onnx import compose, helper

    embed = onnx.load(str(folder / "embed.onnx"))
    nodes, weights = list(embed.graph.node), list(embed.graph.initializer)
    opsets = {o.domain: o.version for o in embed.opset_import}
    outputs, hidden = [], "hidden"
    for number in range(1, max(exits) + 1):
        prefix = f"layer{number}/"
        layer = compose.add_prefix(onnx.load(str(folder / f"layer{number}.onnx")), prefix)
        for o in layer.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
        joined = {prefix + "hidden_in": hidden, prefix + "bias": "bias", prefix + "attention_mask": "attention_mask"}
        for node in layer.graph.node:
            node.input[:] = [joined.get(name, name) for name in node.input]
        nodes += layer.graph.node
        weights += layer.graph.initializer
        if number in exits:
            pooled = helper.make_tensor_value_info(f"pooled{number}", onnx.TensorProto.FLOAT, ["batch", None])
            nodes.append(helper.make_node("Identity", [prefix + "pooled"], [pooled.name]))
            outputs.append(pooled)
        hidden = prefix + "hidden"
    # Only what the outputs need: a layer's pooling and adaptor stay out unless it is an exit.
    needed, kept = {o.name for o in outputs}, []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    weights = [w for w in weights if w.name in needed]
    graph = helper.make_graph(kept[::-1], "exits-" + "-".join(map(str, exits)), list(embed.graph.input), outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = embed.ir_version
    return model


def session_options(threads: int):
    """ONNX Runtime settings of every exit graph's session: ``threads`` within an operator, one
    across, nodes run in order, every graph optimisation, warnings only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


EXIT_GRAPHS = 8  # exit graphs kept per encoder (each holds its own copy of the weights), least recently used dropped
EXIT_FORMAT = 1  # part of a saved exit graph's name: changes whenever ``exit_graph`` joins differently


def exits_of(sizes) -> tuple[int, ...]:
    """The layers an exit graph for ``sizes`` pools at, sorted: what names its session and its saved file."""
    return tuple(sorted({s.layer for s in sizes}))


def exit_file(folder: Path, exits: tuple[int, ...]) -> Path:
    """Where the exit graph pooling at ``exits`` is saved in an export's ``folder``."""
    return folder / f"exits-v{EXIT_FORMAT}-{'-'.join(map(str, exits))}.onnx"


def save_exit_graph(path: Path, graph: bytes) -> None:
    """Write ``graph`` to ``path`` under a temporary name, then rename it into place, so a reader never opens
    half a file; a folder that cannot be written keeps nothing (the graph is joined again next time)."""
    try:
        handle, work = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(graph)
        os.replace(work, path)
    except OSError:
        pass
    finally:
        if os.path.exists(work):
            os.unlink(work)


class OnnxEncoder(Encoder):
    """``Encoder`` on ONNX Runtime: same inputs, same outputs, one graph run per batch.

    ``runs`` counts how often each exported graph ran (``embed``, ``layer1``, ...), so a caller
    can see that a plan ending at layer n ran n layers; ``graphs`` holds the exit graphs' sessions,
    keyed by the layers they pool at.
    """

    def __init__(self, model: StarbucksModel, variant: str = "fp32", threads: int = 1, batch_size: int = 32):
        super().__init__(model, batch_size=batch_size)
        self.variant = variant
        self.kind = "onnx" if variant == "fp32" else f"onnx-{variant}"
        self.threads = threads
        self.folder = graph_folder(model, variant)
        self.options = session_options(threads)
        self.runs = {name: 0 for name in layer_names(model.num_layers)}
        self.graphs: dict[tuple[int, ...], object] = {}
        self._graphs_lock = threading.Lock()

    def session(self, exits: tuple[int, ...]):
        """The session of the exit graph pooling at ``exits`` (sorted layer numbers), built on first use."""
        with self._graphs_lock:
            session = self.graphs.pop(exits, None) or self._open(exits)
            self.graphs[exits] = session  # most recently used last
            while len(self.graphs) > EXIT_GRAPHS:
                del self.graphs[next(iter(self.graphs))]
            return session

    def _open(self, exits: tuple[int, ...]):
        """A session of the saved exit graph; else of one joined now, and saved for later processes."""
        import onnxruntime as ort

        path = exit_file(self.folder, exits)
        if path.is_file():
            try:
                return ort.InferenceSession(str(path), self.options, providers=["CPUExecutionProvider"])
            except Exception:  # ONNX Runtime's own errors: a damaged file, joined again and replaced below
                pass
        graph = exit_graph(self.folder, exits).SerializeToString()
        save_exit_graph(path, graph)
        return ort.InferenceSession(graph, self.options, providers=["CPUExecutionProvider"])

    def _vectors(self, input_ids: np.ndarray, mask: np.ndarray, sizes: list[Size]) -> dict[Size, np.ndarray]:
        exits = exits_of(sizes)
        pooled = dict(zip(exits, self.session(exits).run([f"pooled{n}" for n in exits],
                                                         {"input_ids": input_ids, "attention_mask": mask})))
        with self._graphs_lock:
            for name in layer_names(max(exits)):
                self.runs[name] += 1
        return {s: finish(pooled[s.layer][:, : s.dim], self.config.normalized) for s in sizes}


def finish(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """Truncated vectors as float32, L2-normalised when the model's settings say so (as ``StarbucksModel.pool``)."""
    vectors = np.array(vectors, dtype=np.float32)
    if normalize:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors
