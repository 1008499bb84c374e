"""Dynamic against static (calibrated) int8 for the served student: the export's ranking gate and
bare ONNX Runtime time on 100-candidate payloads, fp32 beside them.

    python -m rankstill.benchmarks.quantization --model-repo model_repo --model rerank-student
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rankstill.distill.data import load_judgments
from rankstill.export.parity import ranking_parity
from rankstill.model_repo import load_model
from rankstill.pair_tokenizer import PairTokenizer
from rankstill.scoring import PairScorer

from .latency import build_payloads


def quantize_static(fp32_path: Path, tokenizer: PairTokenizer, queries: list[str], items: list[str], out: Path) -> Path:
    """QDQ int8, per channel, activations calibrated (min/max) on the given training pairs."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static as ort_quantize_static)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = [tokenizer.encode(queries[i:i + 64], items[i:i + 64]).as_feeds() for i in range(0, len(queries), 64)]

        def get_next(self):
            return self.batches.pop() if self.batches else None

    ort_quantize_static(str(fp32_path), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul", "Gemm"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--model", default="rerank-student", help="The fp32 student; its -int8 entry is the dynamic variant.")
    parser.add_argument("--payloads", type=int, default=40)
    args = parser.parse_args()

    fp32 = load_model(args.model_repo, args.model)
    tokenizer = PairTokenizer.from_file(fp32.tokenizer_path, fp32.max_length)
    judgments = load_judgments(args.data)
    calibration = judgments[judgments["split"] == "train"].sample(2048, random_state=0)
    validation = judgments[judgments["split"] == "validation"]
    with tempfile.TemporaryDirectory() as scratch:
        variants = {"fp32": fp32.onnx_path, "dynamic-int8": load_model(args.model_repo, f"{args.model}-int8").onnx_path,
                    "static-int8": quantize_static(fp32.onnx_path, tokenizer, list(calibration["query"]),
                                                   list(calibration["product_title"]), Path(scratch) / "static.onnx")}
        scorers = {name: PairScorer.onnx(path, tokenizer) for name, path in variants.items()}
        queries, items = list(validation["query"]), list(validation["product_title"])
        reference = scorers["fp32"].score(queries, items)
        for name in ("dynamic-int8", "static-int8"):
            gate = ranking_parity(validation, reference, scorers[name].score(queries, items))
            print(f"{name}: mean Kendall tau vs fp32 {gate['mean_kendall_tau']:.3f}, NDCG@10 {gate['ndcg@10_candidate']:.4f} "
                  f"(fp32 {gate['ndcg@10_reference']:.4f}), gate {'passed' if gate['passed'] else 'FAILED'}")
        payloads = build_payloads(args.data, args.payloads, 100)
        prepared = {name: [s.prepare([s.tokenize([q] * len(d), d)]) for q, d in payloads] for name, s in scorers.items()}
        times = {name: [] for name in scorers}
        for index in range(len(payloads)):  # interleaved, so drift hits every variant alike
            for name, scorer in scorers.items():
                began = time.perf_counter()
                scorer.run_prepared(prepared[name][index])
                times[name].append(time.perf_counter() - began)
    print("bare p50 ms per 100-candidate request: " + ", ".join(f"{n} {np.median(t) * 1000:.1f}" for n, t in times.items()))


if __name__ == "__main__":
    main()
