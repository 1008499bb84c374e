"""`rankstill labels stats` and `rankstill labels merge`: what a shared label store holds, and one store from several."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from rankstill.label_store import KEY, LabelStore, teacher_key

HISTOGRAM_BINS = 20


def stats(root: Path) -> dict:
    """Pairs per split, source and teacher; queries; human-label coverage; a histogram of each teacher's logits."""
    store = LabelStore(root)
    frame = store.read()
    frame["teacher"] = [teacher_key(i, v) for i, v in zip(frame["teacher_id"], frame["teacher_version"])]
    manifest = store.manifest()
    teachers = {}
    for key, group in frame.groupby("teacher", sort=True):
        scores = group["teacher_score"].to_numpy(dtype=np.float64)
        counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS)
        teachers[key] = {
            "pairs": len(group), "queries": int(group["query"].nunique()),
            "per_split": group.groupby("split").size().to_dict(), "per_source": group.groupby("source").size().to_dict(),
            "score": {"mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
                      "max": float(scores.max()), "histogram": {"counts": counts.tolist(), "edges": edges.round(4).tolist()}},
            "conversion": manifest["teachers"].get(key, {}).get("conversion"),
        }
    return {
        "store": str(root), "parts": len(store.parts()), "pairs": len(frame), "queries": int(frame["query"].nunique()),
        "per_split": frame.groupby("split").size().to_dict(), "per_source": frame.groupby("source").size().to_dict(),
        "per_split_source_teacher": {f"{s} / {src} / {t}": int(n) for (s, src, t), n
                                     in frame.groupby(["split", "source", "teacher"]).size().items()},
        "human_labelled": int(frame["human_label"].notna().sum()),
        "teachers": teachers,
    }


def format_stats(report: dict) -> str:
    lines = [f"{report['store']}: {report['pairs']} pairs, {report['queries']} queries, {report['parts']} parts, "
             f"{report['human_labelled']} with human labels",
             "pairs per split / source / teacher:"]
    lines += [f"  {key}: {n}" for key, n in report["per_split_source_teacher"].items()]
    blocks = " ▁▂▃▄▅▆▇█"
    for key, teacher in report["teachers"].items():
        score = teacher["score"]
        counts = np.asarray(score["histogram"]["counts"], dtype=float)
        bars = "".join(blocks[int(round(c / counts.max() * (len(blocks) - 1)))] if counts.max() else " " for c in counts)
        lines.append(f"teacher {key}: {teacher['pairs']} pairs, logit mean {score['mean']:.3f} ± {score['std']:.3f}, "
                     f"range [{score['min']:.2f}, {score['max']:.2f}]  |{bars}|")
        if teacher["conversion"]:
            lines.append(f"  conversion: {teacher['conversion']}")
    return "\n".join(lines)


def plot_stats(root: Path, report: dict, png: Path) -> Path:
    """One histogram of stored logits per teacher, split by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = LabelStore(root).read()
    frame["teacher"] = [teacher_key(i, v) for i, v in zip(frame["teacher_id"], frame["teacher_version"])]
    teachers = list(report["teachers"])
    figure, axes = plt.subplots(len(teachers), 1, figsize=(7, 2.6 * len(teachers)), squeeze=False)
    for axis, key in zip(axes[:, 0], teachers):
        group = frame[frame["teacher"] == key]
        edges = report["teachers"][key]["score"]["histogram"]["edges"]
        for source, rows in group.groupby("source"):
            axis.hist(rows["teacher_score"], bins=edges, alpha=0.6, label=f"{source} ({len(rows)})")
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("teacher logit")
        axis.legend(fontsize=8)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png


def merge(sources: list[Path], destination: Path, part_size: int = 65536) -> dict:
    """Copy every row of `sources` into `destination` unless a row with its key is there already (the
    destination's rows win, then earlier sources); teachers' conversions must agree."""
    target = LabelStore(destination)
    for source in sources:  # check every manifest before writing anything
        for description in LabelStore(source).manifest()["teachers"].values():
            known = target.manifest()["teachers"].get(teacher_key(description["teacher_id"], description["teacher_version"]))
            if known is not None and known.get("conversion") != description.get("conversion"):
                raise ValueError(f"teacher {description['teacher_id']}@{description['teacher_version']} has conversion "
                                 f"{description.get('conversion')!r} in {source} but {known.get('conversion')!r} in {destination}")
    seen = target.keys()
    added, skipped = 0, 0
    for source in sources:
        store = LabelStore(source)
        if not store.parts():
            raise FileNotFoundError(f"label store {source} holds no Parquet parts")
        frame = store.read()
        fresh = np.array([key not in seen for key in zip(*(frame[c] for c in KEY))], dtype=bool)
        rows = frame[fresh]
        skipped += int((~fresh).sum())
        seen.update(zip(*(rows[c] for c in KEY)))
        tag = hashlib.sha1(f"{Path(source).resolve()}:{len(frame)}".encode()).hexdigest()[:10]
        for number, start in enumerate(range(0, len(rows), part_size)):
            chunk = rows.iloc[start:start + part_size]
            present = chunk.astype(object).where(chunk.notna(), None)
            target.write_part(f"merged-{tag}-{number:05d}", {name: present[name].tolist() for name in chunk.columns})
        added += len(rows)
        for description in store.manifest()["teachers"].values():
            target.register_teacher(description)
        manifest = target.manifest()
        for run_id, run in store.manifest()["runs"].items():
            manifest["runs"].setdefault(run_id, {**run, "merged_from": str(source)})
        target.write_manifest(manifest)
    return {"destination": str(destination), "added": added, "already_present": skipped,
            "pairs": len(target.read()) if target.parts() else 0}
