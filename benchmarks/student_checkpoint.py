"""The committed student as a PyTorch checkpoint, recovered from its ONNX file, so that peers that
need PyTorch (sentence-transformers CrossEncoder, Infinity) serve exactly the same weights.

Initializers carry the state dict's names (`export/onnx_export.py:UnpaddedBertScorer` wraps the
model's `bert` and `classifier`), except `projections.N`: a layer's projections side by side
(`projected_parts`), which are split back here. Parity with the ONNX model is checked before the
checkpoint is written.

    python -m rankstill.benchmarks.student_checkpoint --out runs/peer-student
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BertConfig, BertForSequenceClassification

from rankstill.export.onnx_export import projected_parts
from rankstill.model_repo import ModelEntry, load_model
from rankstill.pair_tokenizer import PairTokenizer
from rankstill.scoring import onnx_session

PROJECTIONS = "projections."
SOURCE_FILE = "rankstill-source.json"  # which ONNX file a recovered checkpoint copies


def _state_dict(graph: onnx.GraphProto, layers: int) -> dict[str, torch.Tensor]:
    values = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    state = {name: value for name, value in values.items() if name.startswith(("bert.", "classifier."))}
    for layer in range(layers):
        parts = projected_parts(layer, layers)
        for kind in ("weight", "bias"):
            side_by_side = values[f"{PROJECTIONS}{layer}.{kind}"].chunk(len(parts))
            for part, value in zip(parts, side_by_side):
                state[f"bert.encoder.layer.{layer}.attention.self.{part}.{kind}"] = value
    return state


def recover(entry: ModelEntry, out: Path) -> Path:
    shape = entry.metadata["architecture"]
    model_proto = onnx.load(str(entry.onnx_path))
    state = _state_dict(model_proto.graph, shape["layers"])
    vocab, _ = state["bert.embeddings.word_embeddings.weight"].shape
    config = BertConfig(vocab_size=vocab, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                        num_attention_heads=shape["heads"], intermediate_size=shape["intermediate"],
                        max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
                        type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0], num_labels=1)
    model = BertForSequenceClassification(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"could not map ONNX weights: missing {missing}, unexpected {unexpected}")
    _check_parity(model, entry)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "tokenizer.json").write_bytes(entry.tokenizer_path.read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "model_max_length": entry.max_length,
                                                           "do_lower_case": True}))
    (out / SOURCE_FILE).write_text(json.dumps({"model": entry.name, "version": entry.version,
                                               "onnx_sha256": _digest(entry.onnx_path)}))
    return out


def checkpoint_for(entry: ModelEntry, out: Path) -> Path:
    """`out` as a PyTorch copy of `entry`: kept when it already copies that very ONNX file, recovered
    when missing or when it copies another one (e.g. the student served before the default changed)."""
    source = out / SOURCE_FILE
    if source.is_file():
        if json.loads(source.read_text()).get("onnx_sha256") == _digest(entry.onnx_path):
            return out
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} holds a checkpoint that was not recovered from {entry.onnx_path}, so it may hold "
                         "other weights than the served student: remove it or choose another folder")
    return recover(entry, out)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_parity(model: BertForSequenceClassification, entry: ModelEntry) -> None:
    tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
    feeds = tokenizer.encode(["cordless drill"] * 3, ["DEWALT cordless drill kit", "bathroom faucet", "drill bits"]).as_feeds()
    expected = onnx_session(entry.onnx_path).run(None, feeds)[0].ravel()
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy().ravel()
    if np.max(np.abs(got - expected)) > 1e-4:
        raise RuntimeError(f"recovered checkpoint differs from ONNX: {got} vs {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/peer-student"))
    args = parser.parse_args()
    print(checkpoint_for(load_model(args.model_repo, args.model), args.out))


if __name__ == "__main__":
    main()
