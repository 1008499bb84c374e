"""`rankstill teacher train`: fine-tune a teacher on the judged pairs and report its quality."""

from __future__ import annotations

from pathlib import Path

from .bm25 import TitleIndex, bm25_scores_for
from .data import catalogue, limit_queries, load_judgments
from .evaluate import print_report, ranking_report, save_report
from .teacher import HFTeacher, fine_tune


def train_teacher(data: Path, out: Path, backbone: Path, gguf_file: str | None, teacher_id: str,
                  epochs: float, max_steps: int | None, batch_size: int, lr: float,
                  max_length: int, max_queries: int | None, seed: int = 0) -> dict:
    judgments = load_judgments(data)
    index = TitleIndex.of_products(catalogue(judgments))
    judgments = limit_queries(judgments, max_queries)
    train = judgments[judgments["split"] == "train"]
    validation = judgments[judgments["split"] == "validation"].copy()

    teacher = HFTeacher(backbone, gguf_file=gguf_file, max_length=max_length)
    losses = fine_tune(teacher, list(train["query"]), list(train["product_title"]),
                       train["gain"].to_numpy(), epochs=epochs, batch_size=batch_size, lr=lr,
                       max_steps=max_steps, seed=seed)

    validation["teacher"] = teacher.score(list(validation["query"]),
                                          list(validation["product_title"]), progress=True)
    validation["bm25"] = bm25_scores_for(validation, index)
    report = ranking_report(validation, ["bm25", "teacher"])
    report.update(stage="teacher", train_pairs=len(train), steps=len(losses),
                  final_loss=sum(losses[-50:]) / max(1, len(losses[-50:])))
    teacher.save(out, teacher_id=teacher_id, report=report)
    save_report(report, out / "report.json")
    print_report(f"teacher {teacher_id} on validation queries", report)
    return report
