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
from .teacher import INFO_FILE, TeacherEnsemble, TeacherOutputs, load_interchange, title_embeddings, write_interchange
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


def member_folder(out: Path, seed: int) -> Path:
    return out / f"member-{seed}"


def load_teacher(folder: Path) -> TeacherEnsemble:
    """The teacher of a `seq teacher` folder: its one model, or the ensemble members its teacher.json names."""
    seeds = json.loads((Path(folder) / INFO_FILE).read_text()).get("member_seeds", [])
    folders = [member_folder(Path(folder), seed) for seed in seeds] or [Path(folder)]
    return TeacherEnsemble([load_checkpoint(member)[0] for member in folders]).eval()


def train_teacher(data_dir: Path, out: Path, backbone: Path, shape: SeqShape, config: TrainConfig, k: int,
                  members: int) -> dict:
    """Text-aware SASRec teacher (softmax over all items), then its interchange files in `out`.

    `members` > 1 trains that many teachers (seeds config.seed, +1, ...; each in out/member-<seed>)
    and writes the interchange files of their ensemble (`TeacherEnsemble`)."""
    data = SeqData.open(data_dir)
    titles = title_embeddings(data.items["title"].tolist(), backbone)
    shape = replace(shape, num_items=data.num_items, window=data.window, text_dim=titles.shape[1])
    teacher_id = f"text-{shape.kind}-{shape.hidden}x{shape.layers}" + (f"-ensemble{members}" if members > 1 else "")
    seeds = list(range(config.seed, config.seed + members))
    trained, reports = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model, report = train(build_model(shape, titles), data.split("train"), data.split("valid"), replace(config, seed=seed))
        report.update(test=evaluate(model, data.split("test")), teacher_id=teacher_id if members == 1 else f"{teacher_id}-member-{seed}")
        save_checkpoint(model, out if members == 1 else member_folder(out, seed), report, {"titles": titles})
        trained.append(model)
        reports.append(report)
    teacher = TeacherEnsemble(trained).eval()
    if members == 1:
        report = reports[0]
    else:
        report = {"teacher_id": teacher_id, "valid": evaluate(teacher, data.split("valid")), "test": evaluate(teacher, data.split("test")),
                  "best_epoch": [r["best_epoch"] for r in reports],
                  "members": [{"seed": seed, "best_epoch": r["best_epoch"], "test": r["test"],
                               "valid": {m: v for m, v in r["valid"].items() if m != "epoch"}} for seed, r in zip(seeds, reports)]}
        (out / REPORT).write_text(json.dumps(report, indent=2))
    write_interchange(out, teacher, data.split("train"), data.split("test"), k,
                      {"teacher_id": teacher_id, "backbone": str(backbone), "test": report["test"],
                       "member_seeds": seeds if members > 1 else [],
                       "valid": {m: v for m, v in report["valid"].items() if m != "epoch"}, "best_epoch": report["best_epoch"]})
    return report


def train_student(data_dir: Path, out: Path, shape: SeqShape, config: TrainConfig,
                  teacher_dir: Path | None = None, embed_weight: float = 0.0, watch_test: bool = False) -> dict:
    """A student with BCE, plus DLLM2Rec ranking (config.distill_weight), listwise (config.listwise_weight) and
    embedding (embed_weight) distillation."""
    data = SeqData.open(data_dir)
    teacher: TeacherOutputs | None = load_interchange(teacher_dir, data) if teacher_dir else None
    if (config.reads_teacher_ranks or embed_weight) and teacher is None:
        raise ValueError("distillation needs --teacher (a folder written by `rankstill seq teacher` or `rankstill seq import`)")
    shape = replace(shape, num_items=data.num_items, window=data.window)
    external = teacher.embeddings if embed_weight else None
    torch.manual_seed(config.seed)  # the initial weights too, so a run repeats
    model = build_model(replace(shape, text_dim=0 if external is None else external.shape[1]), external, embed_weight)
    model, report = train(model, data.split("train"), data.split("valid"), config,
                          teacher.targets if teacher is not None and config.reads_teacher_ranks else None,
                          watch=data.split("test") if watch_test else None)
    model.item_input.fold()
    model.shape.text_dim = 0
    test = data.split("test")
    report["test"] = evaluate(model, test, teacher.test_top if teacher is not None else None)
    report.update(embed_weight=embed_weight, teacher=teacher.info.get("teacher_id") if teacher else None)
    save_checkpoint(model, out, report)
    return report


# Rows of the comparison table: name -> which parts of distillation it keeps (ranking distillation with the
# listwise term, embedding distillation, the listwise term alone, and the γ weights of the ranking term, each
# relative to the table's settings). "no-listwise" is DLLM2Rec as published.
VARIANTS = {
    "alone": dict(ranking=False, embedding=False),
    "dllm2rec": dict(),
    "no-position": dict(position=0.0),
    "no-confidence": dict(confidence=0.0),
    "no-consistency": dict(consistency=0.0),
    "no-ranking-distill": dict(ranking=False),
    "no-embedding-distill": dict(embedding=False),
    "no-listwise": dict(listwise=False),
}
METRICS = ("hr@10", "hr@20", "ndcg@10", "ndcg@20", "overlap@20")


def variant_settings(variant: str, config: TrainConfig, embed_weight: float) -> tuple[TrainConfig, float]:
    """The training config and embedding weight of one table row, from the table's DLLM2Rec settings."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    spec = dict(VARIANTS[variant])
    ranking, embedding = spec.pop("ranking", True), spec.pop("embedding", True)
    listwise = spec.pop("listwise", ranking)
    return (replace(config, distill_weight=config.distill_weight if ranking else 0.0,
                    listwise_weight=config.listwise_weight if listwise else 0.0, distill=replace(config.distill, **spec)),
            embed_weight if embedding else 0.0)


def comparison_table(data_dir: Path, teacher_dir: Path, out: Path, kinds: list[str], variants: list[str],
                     shape: SeqShape, config: TrainConfig, embed_weight: float, seeds: int = 1,
                     watch_test: bool = False) -> list[dict]:
    """Train every (student kind, variant) `seeds` times (seeds config.seed, +1, ...), write table.json and table.md.

    Each row holds the mean and sample standard deviation of every test metric over its seeds, and a
    distilled row the gain in HR@20 over the same student alone, paired seed by seed (mean ± std).
    The teacher comes first with its test and validation HR@20 (its strength); rows alone need none
    (without one they lack the overlap with the teacher's top 20). Rows already in
    `out/table.json` for other (model, variant) pairs are kept, so a table can be built in several runs.
    The model of the first seed lies in `out/<model>-<variant>`, the others in `out/<model>-<variant>-seed<S>`.
    """
    has_teacher = (teacher_dir / INFO_FILE).is_file()
    if not has_teacher and set(variants) != {"alone"}:
        raise ValueError(f"{teacher_dir} holds no teacher ({INFO_FILE}): distilled rows need `rankstill seq teacher` "
                         "(or `seq import`) first; `--variants alone` runs without one")
    info = json.loads((teacher_dir / INFO_FILE).read_text()) if has_teacher else {}
    previous = json.loads((out / "table.json").read_text()) if (out / "table.json").is_file() else {}
    runs = [r for r in previous.get("runs", []) if not (r["model"] in kinds and r["variant"] in variants)]
    teacher = {"id": info.get("teacher_id"), "test": info.get("test", {}), "valid": info.get("valid", {}),
               "folder": str(teacher_dir)}
    for kind in kinds:
        for variant in variants:
            row_config, row_embed = variant_settings(variant, config, embed_weight)
            for index in range(seeds):
                seed = config.seed + index
                folder = out / (f"{kind}-{variant}" if index == 0 else f"{kind}-{variant}-seed{seed}")
                report = train_student(data_dir, folder, replace(shape, kind=kind), replace(row_config, seed=seed),
                                       teacher_dir if has_teacher else None, row_embed, watch_test)
                runs.append({"model": kind, "variant": variant, "seed": seed, "test": report["test"],
                             "valid": {k: v for k, v in report["valid"].items() if k != "epoch"},
                             "best_epoch": report["best_epoch"], "train_seconds": report["train_seconds"],
                             "distill_weight": row_config.distill_weight, "listwise_weight": row_config.listwise_weight,
                             "embed_weight": row_embed})
                _write_table(teacher, runs, out, {"data": str(data_dir), "seeds": seeds, "config": config.to_dict(),
                                                  "embed_weight": embed_weight, "shape": shape.to_dict()})
    return summarise(runs)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (model, variant): mean and std of each test metric over seeds, and the seed-paired HR@20 gain."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["variant"]), []).append(run)
    rows = []
    for (model, variant), group in groups.items():
        row = {"model": model, "variant": variant, "seeds": [r["seed"] for r in group],
               "best_epochs": [r["best_epoch"] for r in group]}
        for metric in METRICS:
            values = [r["test"][metric] for r in group if metric in r["test"]]
            if values:
                row[metric], row[f"{metric}_std"] = _mean_std(values)
        row["valid_hr@20"], row["valid_hr@20_std"] = _mean_std([r["valid"]["hr@20"] for r in group])
        alone = {r["seed"]: r["test"]["hr@20"] for r in groups.get((model, "alone"), [])}
        paired = [r["test"]["hr@20"] / alone[r["seed"]] - 1 for r in group if r["seed"] in alone]
        if variant != "alone" and paired:
            row["gain_hr@20"], row["gain_hr@20_std"] = _mean_std(paired)
        rows.append(row)
    return rows


def _cell(mean: float | None, std: float | None, form: str) -> str:
    if mean is None:
        return ""
    return format(mean, form) + ("" if std is None else " ± " + format(std, form.replace("+", "")))


def _write_table(teacher: dict, runs: list[dict], out: Path, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(runs)
    (out / "table.json").write_text(json.dumps({"teacher": teacher, "settings": settings, "rows": rows, "runs": runs}, indent=2))
    seeds = max((len(r["seeds"]) for r in rows), default=0)
    lines = [f"Teacher {teacher['id']}: test HR@20 {teacher['test'].get('hr@20', float('nan')):.4f}, "
             f"validation HR@20 {teacher['valid'].get('hr@20', float('nan')):.4f}. "
             f"Students: test metrics, mean ± std over {seeds} seed(s); HR@20 gain paired seed by seed.", "",
             "| model | variant | " + " | ".join(METRICS) + " | HR@20 vs alone | teacher HR@20 |",
             "|" + "---|" * (len(METRICS) + 4)]
    lines.append("| teacher | " + f"{teacher['id']} | " + " | ".join(
        _cell(teacher["test"].get(m), None, ".4f") for m in METRICS) + " |  |  |")
    for row in rows:
        cells = [_cell(row.get(m), row.get(f"{m}_std"), ".4f") for m in METRICS]
        gain = _cell(row.get("gain_hr@20"), row.get("gain_hr@20_std"), "+.0%")
        strength = f"{teacher['test'].get('hr@20', float('nan')):.4f}" if row["variant"] != "alone" else ""
        lines.append(f"| {row['model']} | {row['variant']} | " + " | ".join(cells) + f" | {gain} | {strength} |")
    teacher_valid = teacher["valid"].get("hr@20")
    weaker = [r["model"] for r in rows if r["variant"] == "alone" and teacher_valid is not None and teacher_valid < r["valid_hr@20"]]
    if weaker:
        lines += ["", f"Note: the teacher's validation HR@20 ({teacher_valid:.4f}) is below {', '.join(weaker)} alone: "
                  "a teacher weaker than its student gave losses, not gains, in the study of the README."]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def inference_ratio(teacher_dir: Path, student_dir: Path, data_dir: Path, batch_size: int = 256, repeats: int = 20) -> dict:
    """PyTorch CPU time per batch of the teacher vs a student, interleaved (same rows)."""
    data = SeqData.open(data_dir)
    test = data.split("test")
    teacher = load_teacher(teacher_dir)
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
