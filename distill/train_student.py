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
from .losses import margin_mse, ranking_loss, soft_bce
from .student import StudentShape, build_student, save_student, score_pairs
from .schedule import warmup_linear_decay
from .torch_runner import resolve_device


# How the kept epoch is chosen from its validation report. Retention against human labels on ~900
# queries moves by several points between epochs by chance, so the best of N epochs by NDCG is an
# optimistic pick; Kendall τ with the teacher averages over every validation pair.
SELECTION = {
    "ndcg": lambda report: report["ndcg@10"]["student"],
    "teacher": lambda report: report["agreement"]["kendall_tau"],
}
VALIDATION_COLUMNS = ["query", "item_id", "human_label", "teacher_score", "bm25_score"]


def _score(report: dict, select: str) -> float:
    value = SELECTION[select](report)  # None where no query could be scored (a single item each, ties)
    return -math.inf if value is None else value


def query_lists(labels: pd.DataFrame) -> list[tuple[str, list[str], np.ndarray, np.ndarray]]:
    """Group labelled pairs into (query, item texts, teacher logits, human labels or NaN), one per query."""
    lists = []
    for query, group in labels.drop_duplicates(["query", "item_id"]).groupby("query", sort=False):
        lists.append((query, list(group["item_text"]), group["teacher_score"].to_numpy(np.float32),
                      group["human_label"].to_numpy(np.float64)))
    return lists


def sample_items(query_list, max_items: int, generator: np.random.Generator):
    """At most `max_items` of a query's items: a fresh random subset at each visit, so that every
    augmented candidate of a query with many takes its turn (a fixed head would drop the deep ones)."""
    query, items, teacher, human = query_list
    if len(items) <= max_items:
        return query_list
    keep = np.sort(generator.choice(len(items), max_items, replace=False))
    return query, [items[i] for i in keep], teacher[keep], human[keep]


def student_logits(student, tokenizer: PairTokenizer, queries: list[str], items: list[str]) -> torch.Tensor:
    """Logits for all pairs (with gradients), run in a few length-sorted chunks."""
    return _pair_outputs(student, tokenizer, queries, items, lambda feeds: (student(**feeds).logits[:, 0],))[0]


def _pair_outputs(student, tokenizer: PairTokenizer, queries: list[str], items: list[str], heads) -> list[torch.Tensor]:
    """Each output of `heads(feeds)` for all pairs, back in the pairs' order, run in a few length-sorted chunks."""
    outputs, rows = [], []
    for chunk_rows, batch in _length_sorted_chunks(tokenizer.tokenize(queries, items)):
        outputs.append(heads(_feeds(batch, student.device)))
        rows.append(chunk_rows)
    order = _original_order(rows, student.device)
    return [torch.cat(parts)[order] for parts in zip(*outputs)]


def _length_sorted_chunks(pairs, chunks: int = 4):
    """The pairs sorted by length in `chunks` runs, each padded to its own longest pair. A training run
    (forward and backward in PyTorch) costs far more than the padding a finer cut saves: a run per
    distinct length took 1.4-1.6 times as long per step on a CPU, and left a GPU waiting on kernel launches."""
    every_token = len(pairs) * int(pairs.lengths.max(initial=1))  # so a run costs more than any padding it saves
    return pairs.chunks(math.ceil(len(pairs) / chunks), run_overhead_tokens=every_token)


def _feeds(batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(value).to(device) for name, value in batch.as_feeds().items()}


def _original_order(rows: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Indices that put the chunks' concatenated outputs back in the order the pairs came in."""
    return torch.from_numpy(np.argsort(np.concatenate(rows), kind="stable")).to(device)


def distillation_loss(student, tokenizer: PairTokenizer, lists, bce_weight: float, loss: str = "margin-mse",
                      temperature: float = 1.0, flat: torch.Tensor | None = None) -> torch.Tensor:
    """`loss` (Margin-MSE by default; listwise or ranknet, see distill/losses.py) over each query's items,
    plus `bce_weight` × soft BCE against σ(teacher). `flat`: the pairs' logits when already computed."""
    if flat is None:
        queries = [query for query, items, _ in lists for _ in items]
        items = [item for _, items, _ in lists for item in items]
        flat = student_logits(student, tokenizer, queries, items)
    width = max(len(items) for _, items, _ in lists)
    scores = torch.zeros(len(lists), width, device=flat.device)
    teacher = torch.zeros(len(lists), width)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    offset = 0
    for row, (_, row_items, row_teacher) in enumerate(lists):
        n = len(row_items)
        scores[row, :n] = flat[offset:offset + n]
        teacher[row, :n] = torch.tensor(row_teacher)
        mask[row, :n] = True
        offset += n
    teacher, mask = teacher.to(flat.device), mask.to(flat.device)
    value = margin_mse(scores, teacher, mask) if loss == "margin-mse" else \
        ranking_loss(loss, scores, teacher, mask, temperature)
    if bce_weight:
        value = value + bce_weight * soft_bce(scores[mask], torch.sigmoid(teacher[mask]))
    return value


def two_head_logits(student, aux_head: torch.nn.Linear, tokenizer: PairTokenizer, queries: list[str],
                    items: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Served-head and auxiliary-head logits of all pairs from one shared trunk (pooled [CLS])."""
    def both_heads(feeds):
        pooled = student.dropout(student.bert(**feeds)[1])
        return student.classifier(pooled)[:, 0], aux_head(pooled)[:, 0]

    return tuple(_pair_outputs(student, tokenizer, queries, items, both_heads))


def auxiliary_head_loss(student, aux_head, tokenizer: PairTokenizer, lists, human: list[np.ndarray],
                        bce_weight: float, loss: str, temperature: float) -> torch.Tensor:
    """Google's auxiliary distillation head: the teacher's logits are fitted by a separate head
    (the distillation loss), the served head by soft BCE against human labels where a pair has one;
    both share the trunk and only the served head is kept."""
    queries = [query for query, items, _ in lists for _ in items]
    items = [item for _, items, _ in lists for item in items]
    served, aux = two_head_logits(student, aux_head, tokenizer, queries, items)
    value = distillation_loss(student, tokenizer, lists, bce_weight, loss, temperature, flat=aux)
    labels = torch.from_numpy(np.concatenate(human).astype(np.float32)).to(served.device)
    known = ~torch.isnan(labels)
    if known.any():
        value = value + soft_bce(served[known], labels[known])
    return value


TEACHER_GAINS = ("no judgments: NDCG@10 with the teacher's sigmoid(logit) as gains (the teacher's own order is "
                 "ideal, 1.0) and Kendall tau with the teacher's order, on held-out queries")


def read_labels(store: LabelStore, split: str, teacher: str | None) -> pd.DataFrame:
    """One teacher's labels (`id` or `id@version`; None: whatever the store holds), or, for several
    comma-separated teachers, their ensemble target: the pairs every one of them labelled, each
    teacher's logits moved onto the first one's scale (the same mean and standard deviation over those
    pairs) and averaged, under the teacher id `ensemble(a+b)`."""
    names = [name.strip() for name in teacher.split(",")] if teacher else []
    if len(names) < 2:
        return store.read(split=split, teacher_id=teacher)
    frames = [store.read(split=split, teacher_id=name).set_index(["query", "item_id"]) for name in names]
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    scores = [frame.loc[common, "teacher_score"].to_numpy(np.float64) for frame in frames]
    mean, spread = scores[0].mean(), scores[0].std() or 1.0
    standardised = [(values - values.mean()) / (values.std() or 1.0) for values in scores]
    ensemble = frames[0].loc[common].reset_index()
    ensemble["teacher_score"] = (mean + spread * np.mean(standardised, axis=0)).astype(np.float32)
    ensemble["teacher_id"] = "ensemble(" + "+".join(names) + ")"
    ensemble["teacher_version"] = ""
    return ensemble


def heldout(store: LabelStore, split: str, teacher: str | None) -> pd.DataFrame:
    """Held-out pairs to evaluate on: the judged ones, or, where nothing was judged, all of the split's pairs."""
    frame = read_labels(store, split, teacher)
    judged = frame[frame["source"] == "judged"]
    return judged if len(judged) else frame[frame["source"] != "shadow"]


def quality_report(frame: pd.DataFrame, scores: dict[str, np.ndarray]) -> dict:
    """NDCG@10 of random, BM25, teacher and each scored model; against human labels where the frame has them,
    else against the teacher (agreement). `frame`: label-store rows; `scores`: model name -> logits."""
    frame = frame.rename(columns={"teacher_score": "teacher", "bm25_score": "bm25"}).assign(**scores)
    judged = frame["human_label"].notna().all() and len(frame)
    frame["gain"] = frame["human_label"] if judged else 1.0 / (1.0 + np.exp(-frame["teacher"].astype(float)))
    report = ranking_report(frame, ["bm25", "teacher", *scores])
    report["measured_against"] = "human judgments" if judged else TEACHER_GAINS
    first = next(iter(scores))
    report["agreement"] = agreement_report(frame, first, "teacher")
    for name in scores:
        key = "student_gain_retention" if name == "student" else f"{name}_gain_retention"
        report[key] = gain_retention(report["ndcg@10"], name)
    return report


def evaluate_student(student, tokenizer: PairTokenizer, pairs: pd.DataFrame) -> dict:
    """NDCG@10 of random, BM25, teacher and student on held-out pairs, and agreement with the teacher."""
    return quality_report(pairs, {"student": score_pairs(student, tokenizer, list(pairs["query"]), list(pairs["item_text"]))})


def train_student(labels_dir: Path, out: Path, backbone_dir: Path, shape: StudentShape,
                  epochs: int, queries_per_step: int, max_items: int, lr: float,
                  bce_weight: float, max_steps: int | None = None, seed: int = 0,
                  freeze_word_embeddings: bool = False, teacher: str | None = None, progress: bool = True,
                  loss: str = "margin-mse", temperature: float = 1.0, extra_labels: list[Path] = (),
                  train_filter=None, aux_head: bool = False, device: str = "auto", select: str = "ndcg",
                  ema_decay: float | None = None) -> dict:
    """`teacher` (`id` or `id@version`) picks one teacher's labels from a shared store; several,
    comma-separated, train on their ensemble (`read_labels`).

    `loss`: margin-mse, listwise or ranknet (`temperature` for the last two); `extra_labels`: more
    stores (augmented pairs from `rankstill augment`) whose training pairs join the main store's;
    `train_filter`: a function of the training frame that returns the rows to train on (sweeps);
    `aux_head`: fit the teacher with an auxiliary head and the served head to human labels;
    `device`: cpu, cuda, or auto (the GPU where there is one); `select`: the epoch kept, by validation
    NDCG@10 against human labels (`ndcg`) or by Kendall τ with the teacher on the same pairs (`teacher`);
    `ema_decay`: validate, keep and save the exponential moving average of the weights over the
    optimizer steps (this decay per step) instead of the last step's weights.
    Each epoch's validation scores are written to `out/validation_scores.parquet`."""
    if select not in SELECTION:
        raise ValueError(f"select must be one of {sorted(SELECTION)}, not {select!r}")
    store = LabelStore(labels_dir)
    train_labels = read_labels(store, "train", teacher)
    extra = [read_labels(LabelStore(path), "train", teacher) for path in extra_labels]
    if extra:
        train_labels = pd.concat([train_labels, *extra], ignore_index=True)
    if train_filter is not None:
        train_labels = train_filter(train_labels)
    if train_labels.empty:
        raise ValueError(f"label store {labels_dir} has no training labels" + (f" from teacher {teacher}" if teacher else ""))
    keys = {f"{i}@{v}" for i, v in zip(train_labels["teacher_id"], train_labels["teacher_version"])}
    if len(keys) > 1:
        raise ValueError(f"label store {labels_dir} holds labels of several teachers {sorted(keys)}: pick one with --teacher")
    train_lists = query_lists(train_labels)
    teacher_ids = sorted(set(train_labels["teacher_id"]))
    validation = heldout(store, "validation", teacher)

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    tokenizer = PairTokenizer.from_file(backbone_dir / "tokenizer.json", shape.max_length)
    device = resolve_device(device)
    student = build_student(shape, backbone_dir).to(device)
    # The 30k-token table is most of a small student's weights; frozen, it cannot memorise queries.
    student.bert.embeddings.word_embeddings.weight.requires_grad_(not freeze_word_embeddings)
    steps_per_epoch = math.ceil(len(train_lists) / queries_per_step)
    total = min(epochs * steps_per_epoch, max_steps or epochs * steps_per_epoch)
    aux = torch.nn.Linear(student.config.hidden_size, 1).to(device) if aux_head else None
    trainable = [p for p in student.parameters() if p.requires_grad] + (list(aux.parameters()) if aux else [])
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    schedule = warmup_linear_decay(optimizer, total)
    averaged = (torch.optim.swa_utils.AveragedModel(student, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay),
                                                    use_buffers=True) if ema_decay else None)
    validated = averaged.module if averaged is not None else student

    best_state, best_report, history = None, None, []
    validation_scores = validation[VALIDATION_COLUMNS].reset_index(drop=True)
    bar = tqdm(total=total, desc="student distillation", unit="step", disable=not progress)
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
            sampled = [sample_items(train_lists[i], max_items, generator)
                       for i in order[start:start + queries_per_step]]
            batch = [(query, items, teacher) for query, items, teacher, _ in sampled]
            if aux is not None:
                value = auxiliary_head_loss(student, aux, tokenizer, batch, [human for *_, human in sampled],
                                            bce_weight, loss, temperature)
            else:
                value = distillation_loss(student, tokenizer, batch, bce_weight, loss, temperature)
            value.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if averaged is not None:
                averaged.update_parameters(student)
            losses.append(value.item())
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        # Harvested shadow labels have no judged validation pairs: then the last epoch is kept.
        report = {"ndcg@10": None}
        if len(validation):
            scores = score_pairs(validated, tokenizer, list(validation["query"]), list(validation["item_text"]))
            validation_scores[f"epoch_{epoch + 1}"] = scores
            report = quality_report(validation, {"student": scores})
        report.update(epoch=epoch + 1, steps=step, train_loss=float(np.mean(losses)) if losses else None)
        history.append(report)
        tqdm.write(f"epoch {epoch + 1}: validation NDCG@10 {report['ndcg@10']}, "
                   f"agreement {report.get('agreement')}")
        if best_report is None or report["ndcg@10"] is None or _score(report, select) > _score(best_report, select):
            best_state, best_report = copy.deepcopy(validated.state_dict()), report
    bar.close()

    student.load_state_dict(best_state)
    test = heldout(store, "test", teacher)
    final = {
        "stage": "student", "shape": shape.__dict__, "teacher_ids": teacher_ids, "teachers": sorted(keys),
        "train_queries": len(train_lists), "train_pairs": sum(len(items) for _, items, *_ in train_lists),
        "validation": best_report, "history": history,
        "test": evaluate_student(student, tokenizer, test) if len(test) else None,
        "labels": str(labels_dir), "freeze_word_embeddings": freeze_word_embeddings,
        "loss": loss, "temperature": temperature, "bce_weight": bce_weight, "aux_head": aux_head, "device": device,
        "extra_labels": [str(path) for path in extra_labels], "select": select, "ema_decay": ema_decay,
        "train_sources": {str(k): int(v) for k, v in train_labels["source"].value_counts().items()},
    }
    save_student(student, out, backbone_dir / "tokenizer.json", shape,
                 {"report": final, "teacher_ids": teacher_ids})
    save_report(final, out / "report.json")
    validation_scores.to_parquet(out / "validation_scores.parquet", index=False)
    print_report(f"student (best epoch on validation by {select}; test reported once)",
                 {"validation": best_report, "test": final["test"]})
    return final
