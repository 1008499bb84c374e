"""The compute limit of a request: its useful work at the MatMul rate ONNX Runtime reaches here.

    useful work  = real (unpadded) tokens × the model's FLOPs per token
    FLOPs/token  = Σ over the graph's weight MatMuls/Gemms of 2·K·N, read from the ONNX file
                   (int8 models: their quantized weights), plus attention (4 · seq · hidden per layer)
    MatMul rate  = measured now, in ONNX Runtime, on the model's own weight shapes with fp32
                   activations of a few thousand rows (what a 100-candidate request feeds it)

A request cannot be served faster than that on this machine; `rankstill bench` reports each
scenario's latency ÷ limit beside the floor ratio.
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
            if weights:
                shapes[weights[0]] += 1
    return shapes


def flops_per_token(onnx_path: Path, hidden: int, layers: int, sequence_tokens: float) -> float:
    linear = sum(2 * k * n * count for (k, n), count in weight_shapes(onnx_path).items())
    attention = 4 * sequence_tokens * hidden * layers  # QKᵀ and attention × V, over the pair's own tokens
    return float(linear + attention)


def matmul_rate(onnx_path: Path, rows: int = 2400, repeats: int = 7) -> float:
    """FLOP/s of fp32 MatMuls with the model's weight shapes (rows × K @ K × N), median of repeats."""
    shapes = weight_shapes(onnx_path)
    inputs, nodes, initializers, outputs, flops = [], [], [], [], 0.0
    for index, ((k, n), count) in enumerate(shapes.items()):
        inputs.append(helper.make_tensor_value_info(f"x{index}", TensorProto.FLOAT, [rows, k]))
        initializers.append(numpy_helper.from_array(np.random.default_rng(index).standard_normal((k, n)).astype(np.float32), f"w{index}"))
        nodes.append(helper.make_node("MatMul", [f"x{index}", f"w{index}"], [f"y{index}"]))
        outputs.append(helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, [rows, n]))
        flops += 2.0 * rows * k * n  # one MatMul of each shape per run
    graph = helper.make_graph(nodes, "matmuls", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {f"x{i}": np.random.default_rng(i).standard_normal((rows, k)).astype(np.float32)
             for i, (k, _) in enumerate(shapes)}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "matmuls.onnx"
        onnx.save(model, str(path))
        session = onnx_session(path)
        session.run(None, feeds)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - began)
    return flops / float(np.median(times))


def request_limits_ms(entry, pair_lengths: list[np.ndarray], rate: float) -> list[float]:
    """The compute limit of each request (the real tokens of its pairs), in ms."""
    architecture = entry.metadata.get("architecture", {})
    hidden, layers = int(architecture.get("hidden", 128)), int(architecture.get("layers", 2))
    per_token = flops_per_token(entry.onnx_path, hidden, layers, float(np.mean(np.concatenate(pair_lengths))))
    return [float(lengths.sum()) * per_token / rate * 1000 for lengths in pair_lengths]
