"""Export a student cross-encoder to ONNX and check it against PyTorch on real pairs."""

from __future__ import annotations

from pathlib import Path

import torch

from rankstill.pair_tokenizer import PairTokenizer

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "scores"


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


def export_onnx(model: torch.nn.Module, tokenizer: PairTokenizer, path: Path, opset: int = 17) -> Path:
    """Write `model` as ONNX with dynamic batch and sequence axes; output `scores` [batch, 1]."""
    model.eval()
    sample = tokenizer.encode(["sample query", "another"], ["a product title", "a longer product title here"])
    args = tuple(torch.from_numpy(sample.as_feeds()[name]) for name in INPUT_NAMES)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_LogitsOnly(model), args, str(path), input_names=list(INPUT_NAMES),
                      output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                      opset_version=opset, dynamo=False)
    return path


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization, per output channel (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    return int8_path
