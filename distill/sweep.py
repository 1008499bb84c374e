"""`rankstill sweep`: student quality against how much it learns from, and against its size.

- `data_size_sweep`: the same student trained on the main store plus 0, N1, N2, ... teacher-labelled
  augmented pairs (whole (query, source) lists, in one fixed random order, so a larger size holds the
  smaller one's pairs); validation NDCG@10 and gain retention per size, JSON + PNG.
- `frontier`: several student shapes trained on the same labels, each exported (ONNX fp32 + int8) to a
  scratch model repository and timed on 100-candidate payloads in the same run, beside the committed
  default; validation retention against latency, JSON + PNG.

Both tune on validation only: test figures stay in each student's own report.json, to be read once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .augment import SOURCES
from .student import StudentShape
from .train_student import train_student


def augmented_subset(frame: pd.DataFrame, pairs: int, seed: int = 0, sources: tuple[str, ...] = SOURCES) -> pd.DataFrame:
    """The main store's rows, plus about `pairs` augmented rows (whole (query, source) lists taken in a
    fixed random order of `seed`: a larger `pairs` keeps every list a smaller one took)."""
    is_augmented = frame["source"].isin(SOURCES)
    base, augmented = frame[~is_augmented], frame[is_augmented & frame["source"].isin(sources)]
    if pairs <= 0 or augmented.empty:
        return base
    groups = augmented.groupby(["query", "source"], sort=True).size()
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes = groups.to_numpy()[order]
    keep = order[: int(np.searchsorted(np.cumsum(sizes), pairs, side="left")) + 1]
    chosen = set(groups.index[keep])
    mask = [key in chosen for key in zip(augmented["query"], augmented["source"])]
    return pd.concat([base, augmented[mask]], ignore_index=True)


def _row(report: dict, **extra) -> dict:
    validation = report["validation"]
    return {**extra, "train_pairs": report["train_pairs"], "train_queries": report["train_queries"],
            "validation_ndcg@10": validation["ndcg@10"], "validation_retention": validation["student_gain_retention"],
            "agreement": validation.get("agreement"), "best_epoch": validation.get("epoch")}


def data_size_sweep(labels: Path, extra: list[Path], out: Path, sizes: list[int], backbone: Path, shape: StudentShape,
                    train_options: dict, sources: tuple[str, ...] = SOURCES, seed: int = 0) -> dict:
    """Rows are written after each point; a re-run with the same settings keeps the points already in
    `out/data_size.json` (an interrupted sweep goes on where it stopped)."""
    settings = json.loads(json.dumps({"labels": str(labels), "extra_labels": [str(p) for p in extra], "seed": seed,
                                      "sources": list(sources), "shape": shape.__dict__, "train": train_options},
                                     default=str))
    done = {row["requested_pairs"]: row for row in _earlier_rows(out / "data_size.json", settings)}
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        if size in done:
            rows.append(done[size])
            continue
        began = time.perf_counter()
        report = train_student(labels, out / f"n{size}", backbone, shape, extra_labels=extra, progress=False,
                               train_filter=lambda frame, n=size: augmented_subset(frame, n, seed, sources),
                               **train_options)
        augmented = sum(v for k, v in report["train_sources"].items() if k in SOURCES)
        rows.append(_row(report, requested_pairs=size, augmented_pairs=augmented,
                         seconds=round(time.perf_counter() - began, 1)))
        _write(out, "data_size", {**settings, "rows": rows})
    plot_sweep(rows, out / "data_size.png", "augmented_pairs", "teacher-labelled augmented pairs")
    return {"rows": rows, "json": str(out / "data_size.json"), "png": str(out / "data_size.png")}


def _earlier_rows(path: Path, settings: dict) -> list[dict]:
    """The rows of an earlier sweep in `path`, when it ran with exactly these settings."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    rows = earlier.pop("rows", [])
    return rows if earlier == settings else []


def _write(out: Path, name: str, report: dict) -> None:
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))


def plot_sweep(rows: list[dict], png: Path, x: str, xlabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [row[x] for row in rows]
    ax.plot(xs, [row["validation_ndcg@10"]["student"] for row in rows], "o-", label="student")
    for name, style in (("teacher", "--"), ("bm25", ":"), ("random", "-.")):
        ax.plot(xs, [row["validation_ndcg@10"][name] for row in rows], style, label=name)
    for row in rows:
        if row["validation_retention"] is None:  # the teacher is no better than random order
            continue
        ax.annotate(f"{row['validation_retention']:.0%}", (row[x], row["validation_ndcg@10"]["student"]),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation NDCG@10 (labels: % of teacher's gain)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def parse_shape(spec: str) -> StudentShape:
    """`LxH` (e.g. 2x128: heads H/64 at least 2, intermediate 4H) or `LxH@0,2,4` (layers of the backbone)."""
    body, _, layers = spec.partition("@")
    depth, width = (int(v) for v in body.lower().split("x"))
    heads = max(2, width // 64)
    return StudentShape(layers=depth, hidden=width, heads=heads, intermediate=4 * width, init_layers=layers,
                        identity_attention=not layers)


def time_entry(entry: Path, payloads, repeats: int = 1) -> dict:
    """p50 / p90 ms of bare ONNX Runtime for model_repo/NAME `entry` over 100-candidate payloads
    (pre-tokenized, the server's padding), and the ONNX file's size."""
    from rankstill.model_repo import load_model
    from rankstill.pair_tokenizer import PairTokenizer
    from rankstill.scoring import PairScorer

    model = load_model(entry.parent, entry.name)
    scorer = PairScorer.onnx(model.onnx_path, PairTokenizer.from_file(model.tokenizer_path, model.max_length))
    batches = [scorer.prepare([scorer.tokenize([q] * len(docs), docs)]) for q, docs in payloads]
    scorer.run_prepared(batches[0])
    seconds = []
    for _ in range(repeats):
        for batch in batches:
            began = time.perf_counter()
            scorer.run_prepared(batch)
            seconds.append(time.perf_counter() - began)
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "mb": round(model.onnx_path.stat().st_size / 2 ** 20, 1)}


def frontier(labels: Path, extra: list[Path], out: Path, specs: list[str], backbone: Path, teacher_backbone: Path | None,
             train_options: dict, payloads, baseline: Path | None = None, augmented_pairs: int | None = None,
             trained: list[Path] = ()) -> dict:
    """Train, export and time each shape; `LxH@layers` shapes start from `teacher_backbone` (a fine-tuned teacher).
    `trained`: student checkpoints made elsewhere (`rankstill train`, another machine), exported and timed
    beside them, their validation figures read from their own report.json."""
    out.mkdir(parents=True, exist_ok=True)
    repo = out / "model_repo"
    rows, names = [], []
    for spec in specs:
        shape = parse_shape(spec)
        name = "s-" + spec.replace("@", "-at-").replace(",", "_")
        start = teacher_backbone if shape.init_layers and teacher_backbone else backbone
        options = dict(train_options)
        if shape.init_layers:  # a full-width student starting from trained layers: a fine-tuning learning rate
            options["lr"] = options.get("teacher_init_lr", 5e-5)
            options["freeze_word_embeddings"] = True
        options.pop("teacher_init_lr", None)
        began = time.perf_counter()
        report = train_student(labels, out / name, start, shape, extra_labels=extra, progress=False,
                               train_filter=(lambda frame: augmented_subset(frame, augmented_pairs))
                               if augmented_pairs is not None else None, **options)
        latency = _export_and_time(out / name, labels, repo, name, payloads)
        rows.append(_row(report, spec=spec, latency=latency, seconds=round(time.perf_counter() - began, 1)))
        names.append(name)
        _write(out, "frontier", {"rows": rows})
    for student in trained:
        name = "t-" + student.name
        report = json.loads((student / "report.json").read_text())
        latency = _export_and_time(student, labels, repo, name, payloads)
        rows.append(_row(report, spec=student.name, checkpoint=str(student), latency=latency))
        names.append(name)
    if baseline is not None:  # the committed default, timed in the same run on the same payloads
        reference = {"fp32": time_entry(baseline, payloads)}
        if Path(f"{baseline}-int8").is_dir():
            reference["int8"] = time_entry(Path(f"{baseline}-int8"), payloads)
        # time the candidates again after it, so the drift of a shared machine shows
        for row, name in zip(rows, names):
            row["latency_after_baseline"] = {v: time_entry(_variant_entry(repo, name, v), payloads) for v in row["latency"]}
        result = {"rows": rows, "baseline": {"entry": str(baseline), "latency": reference}}
    else:
        result = {"rows": rows}
    _write(out, "frontier", result)
    plot_frontier(result, out / "frontier.png")
    return result


def _variant_entry(repo: Path, name: str, variant: str) -> Path:
    return repo / (name if variant == "fp32" else f"{name}-{variant}")


def _export_and_time(student: Path, labels: Path, repo: Path, name: str, payloads) -> dict:
    """Export a student checkpoint (fp32 + int8, whatever the int8 gate says) into `repo` and time both."""
    from rankstill.export.export_stage import export_student

    export_student(student, labels, repo, name, 1, True, False, int8_gate="skip")
    return {variant: time_entry(_variant_entry(repo, name, variant), payloads)
            for variant in ("fp32", "int8") if _variant_entry(repo, name, variant).is_dir()}


def plot_frontier(result: dict, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, marker in (("fp32", "o"), ("int8", "s")):
        points = [(row["latency"][variant]["p50_ms"], row["validation_retention"], row["spec"])
                  for row in result["rows"] if variant in row["latency"] and row["validation_retention"] is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=variant)
        for x, y, spec in points:
            ax.annotate(spec, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if "baseline" in result:
        ax.axvline(result["baseline"]["latency"]["fp32"]["p50_ms"], ls="--", c="grey", label="committed default (fp32)")
    ax.set_xscale("log")
    ax.set_xlabel("p50 ms, 100 candidates (ONNX Runtime, this machine)")
    ax.set_ylabel("validation retention of teacher's gain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
