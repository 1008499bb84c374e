"""`rankstill train`: distil the teacher's labels into a student (Margin-MSE + soft BCE)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rankstill.label_store import LabelStore
from rankstill.pair_tokenizer import PairTokenizer

from .evaluate import agreement_report, gain_retention, print_report, ranking_report, save_report
from .losses import margin_mse, soft_bce
from .student import StudentShape, build_student, save_student, score_pairs
from .schedule import warmup_linear_decay


def query_lists(labels: pd.DataFrame, max_items: int) -> list[tuple[str, list[str], np.ndarray]]:
    """Group labelled pairs into (query, item texts, teacher logits), at most max_items each."""
    lists = []
    for query, group in labels.groupby("query", sort=False):
        group = group.drop_duplicates("item_id").head(max_items)
        lists.append((query, list(group["item_text"]), group["teacher_score"].to_numpy(np.float32)))
    return lists


def student_logits(student, tokenizer: PairTokenizer, queries: list[str], items: list[str],
                   chunks: int = 4) -> torch.Tensor:
    """Logits for all pairs (with gradients), run in a few length-sorted chunks as the server batches."""
    pairs = tokenizer.tokenize(queries, items)
    outputs, rows = [], []
    for chunk_rows, batch in pairs.chunks(math.ceil(len(pairs) / chunks)):
        feeds = {name: torch.from_numpy(value) for name, value in batch.as_feeds().items()}
        outputs.append(student(**feeds).logits[:, 0])
        rows.append(chunk_rows)
    return torch.cat(outputs)[torch.from_numpy(np.argsort(np.concatenate(rows), kind="stable"))]


def distillation_loss(student, tokenizer: PairTokenizer, lists, bce_weight: float) -> torch.Tensor:
    """Margin-MSE over each query's items, plus `bce_weight` × soft BCE against σ(teacher)."""
    queries = [query for query, items, _ in lists for _ in items]
    items = [item for _, items, _ in lists for item in items]
    flat = student_logits(student, tokenizer, queries, items)
    width = max(len(items) for _, items, _ in lists)
    scores = torch.zeros(len(lists), width)
    teacher = torch.zeros(len(lists), width)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    offset = 0
    for row, (_, row_items, row_teacher) in enumerate(lists):
        n = len(row_items)
        scores[row, :n] = flat[offset:offset + n]
        teacher[row, :n] = torch.tensor(row_teacher)
        mask[row, :n] = True
        offset += n
    loss = margin_mse(scores, teacher, mask)
    if bce_weight:
        loss = loss + bce_weight * soft_bce(scores[mask], torch.sigmoid(teacher[mask]))
    return loss


def evaluate_student(student, tokenizer: PairTokenizer, judged: pd.DataFrame) -> dict:
    """NDCG@10 of random, BM25, teacher and student on judged pairs, and agreement."""
    judged = judged.copy()
    judged["student"] = score_pairs(student, tokenizer, list(judged["query"]), list(judged["item_text"]))
    judged = judged.rename(columns={"human_label": "gain", "teacher_score": "teacher", "bm25_score": "bm25"})
    report = ranking_report(judged, ["bm25", "teacher", "student"])
    report["agreement"] = agreement_report(judged, "student", "teacher")
    report["student_gain_retention"] = gain_retention(report["ndcg@10"], "student")
    return report


def train_student(labels_dir: Path, out: Path, backbone_dir: Path, shape: StudentShape,
                  epochs: int, queries_per_step: int, max_items: int, lr: float,
                  bce_weight: float, max_steps: int | None = None, seed: int = 0,
                  freeze_word_embeddings: bool = False) -> dict:
    store = LabelStore(labels_dir)
    train_labels = store.read(split="train")
    train_lists = query_lists(train_labels, max_items)
    teacher_ids = sorted(set(train_labels["teacher_id"]))
    validation = store.read(split="validation")
    validation = validation[validation["source"] == "judged"]

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    tokenizer = PairTokenizer.from_file(backbone_dir / "tokenizer.json", shape.max_length)
    student = build_student(shape, backbone_dir)
    # The 30k-token table is most of a small student's weights; frozen, it cannot memorise queries.
    student.bert.embeddings.word_embeddings.weight.requires_grad_(not freeze_word_embeddings)
    steps_per_epoch = math.ceil(len(train_lists) / queries_per_step)
    total = min(epochs * steps_per_epoch, max_steps or epochs * steps_per_epoch)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    schedule = warmup_linear_decay(optimizer, total)

    best_state, best_report, history = None, None, []
    bar = tqdm(total=total, desc="student distillation", unit="step")
    step = 0
    for epoch in range(epochs):
        if step >= total:
            break
        order = generator.permutation(len(train_lists))
        student.train()
        losses = []
        for start in range(0, len(order), queries_per_step):
            if step >= total:
                break
            batch = [train_lists[i] for i in order[start:start + queries_per_step]]
            loss = distillation_loss(student, tokenizer, batch, bce_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        # Harvested shadow labels have no judged validation pairs: then the last epoch is kept.
        report = evaluate_student(student, tokenizer, validation) if len(validation) else {"ndcg@10": None}
        report.update(epoch=epoch + 1, steps=step, train_loss=float(np.mean(losses)) if losses else None)
        history.append(report)
        tqdm.write(f"epoch {epoch + 1}: validation NDCG@10 {report['ndcg@10']}, "
                   f"agreement {report.get('agreement')}")
        if (best_report is None or report["ndcg@10"] is None
                or report["ndcg@10"]["student"] > best_report["ndcg@10"]["student"]):
            best_state, best_report = copy.deepcopy(student.state_dict()), report
    bar.close()

    student.load_state_dict(best_state)
    test = store.read(split="test")
    test = test[test["source"] == "judged"]
    final = {
        "stage": "student", "shape": shape.__dict__, "teacher_ids": teacher_ids,
        "train_queries": len(train_lists), "train_pairs": sum(len(i) for _, i, _ in train_lists),
        "validation": best_report, "history": history,
        "test": evaluate_student(student, tokenizer, test) if len(test) else None,
        "labels": str(labels_dir), "freeze_word_embeddings": freeze_word_embeddings,
    }
    save_student(student, out, backbone_dir / "tokenizer.json", shape,
                 {"report": final, "teacher_ids": teacher_ids})
    save_report(final, out / "report.json")
    print_report("student (best epoch on validation; test reported once)",
                 {"validation": best_report, "test": final["test"]})
    return final
