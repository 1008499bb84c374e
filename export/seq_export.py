"""`rankstill seq export`: a sequential-recommender student → parity-checked ONNX → model_repo/NAME.

The model maps `history` [batch, window] (padded with the number of items) and `lengths` [batch]
to `scores` [batch, num_items]; `items.json` maps item indices to catalogue ids and titles.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from rankstill.distill.seqrec.data import SeqData
from rankstill.distill.seqrec.stage import load_checkpoint
from rankstill.model_repo import ITEMS_FILE
from rankstill.scoring import onnx_session

from .parity import value_parity
from .triton_repo import recommend_config_pbtxt, set_default, write_entry

INPUTS = ("history", "lengths")


def export_recommender_onnx(model: torch.nn.Module, window: int, path: Path, opset: int = 17) -> Path:
    model.eval()
    pad = model.shape.num_items
    history = torch.tensor([[0, 1] + [pad] * (window - 2), [2] * window])
    lengths = torch.tensor([2, window])
    torch.onnx.export(model, (history, lengths), str(path), input_names=list(INPUTS), output_names=["scores"],
                      dynamic_axes={"history": {0: "batch"}, "lengths": {0: "batch"}, "scores": {0: "batch"}},
                      opset_version=opset, dynamo=False)
    return path


def export_recommender(student_dir: Path, data_dir: Path, repo: Path, name: str, make_default: bool,
                       version: int = 1, parity_rows: int = 2048) -> dict:
    data = SeqData.open(data_dir)
    model, saved = load_checkpoint(student_dir)
    report = json.loads((student_dir / "report.json").read_text())
    test = data.split("test")
    history, lengths = test.history[:parity_rows], test.lengths[:parity_rows]
    with torch.no_grad():
        reference = model(torch.as_tensor(history), torch.as_tensor(lengths)).numpy()
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = export_recommender_onnx(model, data.window, Path(scratch) / "model.onnx")
        session = onnx_session(onnx_path)
        used = {i.name for i in session.get_inputs()}  # Caser reads no lengths: its graph has no such input
        feeds = {name: value for name, value in (("history", history), ("lengths", lengths)) if name in used}
        exported = session.run(["scores"], feeds)[0]
        parity = value_parity(reference.ravel(), exported.ravel())
        if not parity["passed"]:
            raise RuntimeError(f"ONNX recommender differs from PyTorch: {parity}")
        items_path = Path(scratch) / ITEMS_FILE
        catalogue = [{"id": _integer_id(row.id), "title": row.title} for row in data.items.itertuples()]
        items_path.write_text(json.dumps(catalogue))
        metadata = {
            "task": "recommend",
            "variant": "fp32",
            "window": data.window,
            "inputs": sorted(used, key=list(INPUTS).index),
            "num_items": data.num_items,
            "score": "Output `scores` [batch, num_items]: higher = more likely the next item; item index i is items.json[i].",
            "architecture": saved["shape"],
            "training": {"data": data.stats.get("source"), "rows": data.stats.get("rows"),
                         "exclude_history": data.exclude_history,
                         "teacher": report.get("teacher"), "embed_weight": report.get("embed_weight"),
                         "config": report.get("config"), "best_epoch": report.get("best_epoch")},
            "quality": {"validation": report.get("valid"), "test": report.get("test")},
            "parity": {"onnx_vs_pytorch": parity, "checked_on_test_rows": int(len(history))},
        }
        write_entry(repo, name, version, onnx_path, metadata,
                    recommend_config_pbtxt(name, data.window, data.num_items, inputs=tuple(sorted(used, key=list(INPUTS).index))),
                    {ITEMS_FILE: items_path})
    if make_default:
        set_default(repo, "recommend", name)
    return metadata


def _integer_id(value) -> int:
    """`/recommend` speaks integer catalogue ids."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"catalogue id {value!r} is not an integer: /recommend serves integer item ids") from None
