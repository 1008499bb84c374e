"""The compute limit of a request: its useful work at the MatMul rate ONNX Runtime reaches here.

    useful work  = the matrix products the scores depend on, over real (unpadded) tokens only, for
                   a BERT cross-encoder of the entry's shape (hidden H, feed-forward I, L layers):
                   every layer but the last on every token; the last layer's keys and values on
                   every token, its query, output and feed-forward on [CLS] only; pooler and
                   classifier per pair; attention over each pair's own tokens
    MatMul rate  = measured now, in ONNX Runtime, on the model's own weight shapes with fp32
                   activations of a few thousand rows (what a 100-candidate request feeds it)

A request cannot be served faster than that on this machine; `rankstill bench` reports each
scenario's latency ÷ limit beside the floor ratio. (Until the export went unpadded, the limit
counted every layer on every token: 1.7× the work of the 2 × 128 student on 100-candidate requests.)
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rankstill.scoring import onnx_session

WEIGHT_MATMULS = {"MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul"}


def weight_shapes(onnx_path: Path) -> Counter:
    """(K, N) of every MatMul-like node whose weight is a 2-D initializer, with its count."""
    model = onnx.load(str(onnx_path))
    initializers = {i.name: tuple(i.dims) for i in model.graph.initializer}
    shapes: Counter = Counter()
    for node in model.graph.node:
        if node.op_type in WEIGHT_MATMULS:
            weights = [initializers[name] for name in node.input if len(initializers.get(name, ())) == 2]
            transposed = any(a.name == "transB" and a.i == 1 for a in node.attribute)  # Gemm: weight stored N × K
            if weights:
                shapes[weights[0][::-1] if transposed else weights[0]] += 1
    return shapes


def useful_flops(pair_lengths: np.ndarray, hidden: int, intermediate: int, layers: int) -> float:
    """FLOPs of the matrix products that pairs of these real token counts need (see the module doc)."""
    lengths = np.asarray(pair_lengths, dtype=np.float64)
    layer_per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate)
    per_token = (layers - 1) * layer_per_token + 2 * (2 * hidden * hidden)  # + the last layer's keys, values
    attention = 4 * lengths * hidden  # QKᵀ and weights × V for one query row over the pair's tokens
    per_pair = 2 * (2 * hidden * hidden + 2 * hidden * intermediate) + 2 * (hidden * hidden + hidden)
    return float(np.sum(lengths * (per_token + (layers - 1) * attention) + per_pair + attention))


class MatmulProbe:
    """fp32 MatMuls with the model's weight shapes (rows × K @ K × N, one of each per run): the rate
    ONNX Runtime reaches on this machine now. `rankstill bench` times it in turns with the load it
    judges, so that a shared machine's slow spells weigh on the limit as on the latencies."""

    def __init__(self, onnx_path: Path, rows: int = 2400):
        shapes = weight_shapes(onnx_path)
        inputs, nodes, initializers, outputs, self.flops = [], [], [], [], 0.0
        for index, ((k, n), count) in enumerate(shapes.items()):
            inputs.append(helper.make_tensor_value_info(f"x{index}", TensorProto.FLOAT, [rows, k]))
            initializers.append(numpy_helper.from_array(np.random.default_rng(index).standard_normal((k, n)).astype(np.float32), f"w{index}"))
            nodes.append(helper.make_node("MatMul", [f"x{index}", f"w{index}"], [f"y{index}"]))
            outputs.append(helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, [rows, n]))
            self.flops += 2.0 * rows * k * n
        graph = helper.make_graph(nodes, "matmuls", inputs, outputs, initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        self.feeds = {f"x{i}": np.random.default_rng(i).standard_normal((rows, k)).astype(np.float32)
                      for i, (k, _) in enumerate(shapes)}
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "matmuls.onnx"
            onnx.save(model, str(path))
            self.session = onnx_session(path)
        self.session.run(None, self.feeds)
        self.seconds: list[float] = []

    def run(self) -> None:
        """One run, kept."""
        began = time.perf_counter()
        self.session.run(None, self.feeds)
        self.seconds.append(time.perf_counter() - began)

    @property
    def rate(self) -> float:
        """FLOP/s: the median of the runs so far."""
        return self.flops / float(np.median(self.seconds))


def request_limits_ms(entry, pair_lengths: list[np.ndarray], rate: float) -> list[float]:
    """The compute limit of each request (the real tokens of its pairs), in ms."""
    architecture = entry.metadata.get("architecture", {})
    hidden, layers = int(architecture.get("hidden", 128)), int(architecture.get("layers", 2))
    intermediate = int(architecture.get("intermediate", 4 * hidden))
    return [useful_flops(lengths, hidden, intermediate, layers) / rate * 1000 for lengths in pair_lengths]
