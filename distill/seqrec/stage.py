"""The `rankstill seq` stages: teacher, student, and the comparison table, each reading and writing folders."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .data import SeqData
from .evaluate import evaluate, top_items
from .losses import DistillWeights
from .models import SeqRecommender, SeqShape, build_model
from .teacher import TeacherOutputs, load_interchange, title_embeddings, write_interchange
from .train import TrainConfig, train

CHECKPOINT = "model.pt"
REPORT = "report.json"


def save_checkpoint(model: SeqRecommender, out: Path, report: dict, extra: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"shape": model.shape.to_dict(), "state": model.state_dict(), **(extra or {})}, out / CHECKPOINT)
    (out / REPORT).write_text(json.dumps(report, indent=2))


def load_checkpoint(folder: Path) -> tuple[SeqRecommender, dict]:
    """A saved model; a teacher's checkpoint carries the title embeddings its item input needs."""
    saved = torch.load(Path(folder) / CHECKPOINT, map_location="cpu", weights_only=False)
    model = build_model(SeqShape(**saved["shape"]), saved.get("titles"), saved.get("external_weight", 1.0))
    model.load_state_dict(saved["state"])
    return model.eval(), saved


def train_teacher(data_dir: Path, out: Path, backbone: Path, shape: SeqShape, config: TrainConfig, k: int = 10) -> dict:
    """Text-aware SASRec teacher (softmax over all items), then its interchange files in `out`."""
    data = SeqData.open(data_dir)
    titles = title_embeddings(data.items["title"].tolist(), backbone)
    shape = replace(shape, num_items=data.num_items, window=data.window, text_dim=titles.shape[1])
    torch.manual_seed(config.seed)
    model, report = train(build_model(shape, titles), data.split("train"), data.split("valid"), config)
    report["test"] = evaluate(model, data.split("test"))
    report["teacher_id"] = f"text-{shape.kind}-{shape.hidden}x{shape.layers}"
    save_checkpoint(model, out, report, {"titles": titles})
    write_interchange(out, model, data.split("train"), data.split("test"), k,
                      {"teacher_id": report["teacher_id"], "backbone": str(backbone), "test": report["test"]})
    return report


def train_student(data_dir: Path, out: Path, shape: SeqShape, config: TrainConfig,
                  teacher_dir: Path | None = None, embed_weight: float = 0.0) -> dict:
    """A student with BCE, plus DLLM2Rec ranking (config.distill_weight) and embedding (embed_weight) distillation."""
    data = SeqData.open(data_dir)
    teacher: TeacherOutputs | None = load_interchange(teacher_dir, data) if teacher_dir else None
    if (config.distill_weight or embed_weight) and teacher is None:
        raise ValueError("distillation needs --teacher (a folder written by `rankstill seq teacher` or `rankstill seq import`)")
    shape = replace(shape, num_items=data.num_items, window=data.window)
    external = teacher.embeddings if embed_weight else None
    torch.manual_seed(config.seed)  # the initial weights too, so a run repeats
    model = build_model(replace(shape, text_dim=0 if external is None else external.shape[1]), external, embed_weight)
    model, report = train(model, data.split("train"), data.split("valid"), config,
                          teacher.targets if teacher is not None and config.distill_weight else None)
    model.item_input.fold()
    model.shape.text_dim = 0
    test = data.split("test")
    report["test"] = evaluate(model, test, teacher.test_top if teacher is not None else None)
    report.update(embed_weight=embed_weight, teacher=teacher.info.get("teacher_id") if teacher else None)
    save_checkpoint(model, out, report)
    return report


# Rows of the comparison table: name -> (ranking distillation λ, embedding weight, DistillWeights)
VARIANTS = {
    "alone": (0.0, 0.0, DistillWeights()),
    "dllm2rec": (0.8, 1.0, DistillWeights()),
    "no-position": (0.8, 1.0, DistillWeights(position=0.0)),
    "no-confidence": (0.8, 1.0, DistillWeights(confidence=0.0)),
    "no-consistency": (0.8, 1.0, DistillWeights(consistency=0.0)),
    "no-ranking-distill": (0.0, 1.0, DistillWeights()),
    "no-embedding-distill": (0.8, 0.0, DistillWeights()),
}


def comparison_table(data_dir: Path, teacher_dir: Path, out: Path, kinds: list[str], variants: list[str],
                     shape: SeqShape, config: TrainConfig) -> list[dict]:
    """Train every (student kind, variant), write table.json and table.md; the teacher is the first row.

    Rows already in `out/table.json` for other (model, variant) pairs are kept, so a table can be
    built in several runs.
    """
    info = json.loads((teacher_dir / "teacher.json").read_text())
    previous = json.loads((out / "table.json").read_text()) if (out / "table.json").is_file() else []
    rows = [{"model": "teacher", "variant": info.get("teacher_id"), **info.get("test", {})}]
    rows += [r for r in previous if r["model"] != "teacher" and not (r["model"] in kinds and r["variant"] in variants)]
    for kind in kinds:
        for variant in variants:
            distill_weight, embed_weight, weights = VARIANTS[variant]
            report = train_student(data_dir, out / f"{kind}-{variant}", replace(shape, kind=kind),
                                   replace(config, distill_weight=distill_weight, distill=weights),
                                   teacher_dir, embed_weight)
            rows.append({"model": kind, "variant": variant, **report["test"], "best_epoch": report["best_epoch"],
                         "train_seconds": report["train_seconds"]})
            _write_table(rows, out)
    return rows


def _write_table(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    alone = {r["model"]: r["hr@20"] for r in rows if r["variant"] == "alone"}
    columns = ["hr@10", "hr@20", "ndcg@10", "ndcg@20", "overlap@20"]
    lines = ["| model | variant | " + " | ".join(columns) + " | HR@20 vs alone |", "|" + "---|" * (len(columns) + 3)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if c in row else "" for c in columns]
        gain = f"{row['hr@20'] / alone[row['model']] - 1:+.0%}" if row["model"] in alone and row["variant"] != "alone" else ""
        lines.append(f"| {row['model']} | {row['variant']} | " + " | ".join(cells) + f" | {gain} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def inference_ratio(teacher_dir: Path, student_dir: Path, data_dir: Path, batch_size: int = 256, repeats: int = 20) -> dict:
    """PyTorch CPU time per batch of the teacher vs a student, interleaved (same rows)."""
    data = SeqData.open(data_dir)
    test = data.split("test")
    teacher, _ = load_checkpoint(teacher_dir)
    student, _ = load_checkpoint(student_dir)
    history = torch.as_tensor(test.history[:batch_size])
    lengths = torch.as_tensor(test.lengths[:batch_size])
    times = {"teacher": [], "student": []}
    with torch.no_grad():
        for _ in range(repeats):
            for name, model in (("teacher", teacher), ("student", student)):
                started = time.perf_counter()
                model(history, lengths)
                times[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(values) * 1000) for name, values in times.items()}
    return {"batch": batch_size, "teacher_ms": medians["teacher"], "student_ms": medians["student"],
            "ratio": medians["teacher"] / medians["student"]}
