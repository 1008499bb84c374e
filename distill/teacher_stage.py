"""`rankstill teacher train`: fine-tune a teacher on the judged pairs and report its quality."""

from __future__ import annotations

from pathlib import Path

from .bm25 import TitleIndex, bm25_scores_for
from .dataset import Dataset
from .evaluate import print_report, ranking_report, save_report
from .teacher import HFTeacher, fine_tune


def train_teacher(data, out: Path, backbone: Path, gguf_file: str | None, teacher_id: str,
                  epochs: float, max_steps: int | None, batch_size: int, lr: float,
                  max_length: int, max_queries: int | None, seed: int = 0) -> dict:
    """`data`: a checked Dataset (see distill/dataset.py) or the path of Home Depot's CSV."""
    if not isinstance(data, Dataset):
        from .dataset import load_dataset
        from .label import homedepot

        data = load_dataset(homedepot(data))
    if not data.has_judgments:
        raise ValueError("training a teacher needs judgments (data.judgments); name a teacher to use instead")
    index = TitleIndex(list(data.items["item_id"]), list(data.items["item_text"]))
    judgments = data.limit_queries(max_queries).judgments
    train = judgments[judgments["split"] == "train"]
    validation = judgments[judgments["split"] == "validation"].copy()

    teacher = HFTeacher(backbone, gguf_file=gguf_file, max_length=max_length)
    losses = fine_tune(teacher, list(train["query"]), list(train["item_text"]),
                       train["gain"].to_numpy(), epochs=epochs, batch_size=batch_size, lr=lr,
                       max_steps=max_steps, seed=seed)

    validation["teacher"] = teacher.score(list(validation["query"]),
                                          list(validation["item_text"]), progress=True)
    validation["bm25"] = bm25_scores_for(validation, index, "item_id")
    report = ranking_report(validation, ["bm25", "teacher"])
    report.update(stage="teacher", train_pairs=len(train), steps=len(losses),
                  final_loss=sum(losses[-50:]) / max(1, len(losses[-50:])))
    teacher.save(out, teacher_id=teacher_id, report=report)
    save_report(report, out / "report.json")
    print_report(f"teacher {teacher_id} on validation queries", report)
    return report
