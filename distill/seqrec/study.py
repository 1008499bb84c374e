"""Early-stopping rules replayed on logged training curves (a study tool for `seq table --watch-test`).

Training does not depend on the patience: a run trained with a long patience and a high epoch cap
passes through exactly the epochs a shorter rule would have seen, then goes on. So one long run per
(student, variant, seed) shows what every (patience, cap) rule would have chosen, on validation
NDCG@20 as training does; the test metrics of that epoch (logged by `--watch-test`) are only reported.

    python -m rankstill.distill.seqrec.study runs/seq/b/long-gru4rec --rule 3:30 --rule 10:40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def chosen_epoch(epochs: list[dict], patience: int, cap: int) -> dict:
    """The epoch `train` would return under (patience, cap): the best validation NDCG@20 seen before stopping."""
    best = None
    for epoch in epochs[:cap]:
        if best is None or epoch["ndcg@20"] > best["ndcg@20"]:
            best = epoch
        elif epoch["epoch"] - best["epoch"] >= patience:
            break
    return best


def _logged_runs(tables: dict[Path, str | None]):
    """(model, variant, seed, epochs) of every run in the tables; a table's label renames its distilled variant."""
    for table_dir, label in tables.items():
        if not (table_dir / "table.json").is_file():
            continue  # no run finished yet
        table = json.loads((table_dir / "table.json").read_text())
        first_seed = table["settings"]["config"]["seed"]
        for run in table["runs"]:
            name = f"{run['model']}-{run['variant']}"
            folder = table_dir / (name if run["seed"] == first_seed else f"{name}-seed{run['seed']}")
            variant = label if label and run["variant"] != "alone" else run["variant"]
            yield run["model"], variant, run["seed"], json.loads((folder / "report.json").read_text())["epochs"]


def replay(tables: dict[Path, str | None], rules: list[tuple[int, int]]) -> list[dict]:
    """Per (model, variant, rule), pooling the runs of all `tables`: mean ± std over seeds of the chosen
    epoch's validation and test HR@20, and a distilled row's gain over alone, paired by seed."""
    runs = list(_logged_runs(tables))
    rows = []
    for patience, cap in rules:
        picks = {}
        for model, variant, seed, epochs in runs:
            if len(epochs) < cap and epochs[-1]["epoch"] - chosen_epoch(epochs, 10**9, cap)["epoch"] < patience:
                continue  # the logged run ended before this rule would have stopped: not replayable
            pick = chosen_epoch(epochs, patience, cap)
            picks[(model, variant, seed)] = {"epoch": pick["epoch"], "valid": pick["hr@20"], "test": pick["watch"]["hr@20"]}
        for model, variant in sorted({(m, v) for m, v, _ in picks}):
            seeds = sorted(s for m, v, s in picks if (m, v) == (model, variant))
            mine = [picks[(model, variant, s)] for s in seeds]
            row = {"model": model, "variant": variant, "patience": patience, "cap": cap, "seeds": seeds,
                   "epochs": [p["epoch"] for p in mine],
                   "valid_hr@20": float(np.mean([p["valid"] for p in mine])),
                   "test_hr@20": float(np.mean([p["test"] for p in mine])),
                   "test_hr@20_std": float(np.std([p["test"] for p in mine], ddof=1)) if len(mine) > 1 else None}
            if variant != "alone":
                gains = [picks[(model, variant, s)]["test"] / picks[(model, "alone", s)]["test"] - 1
                         for s in seeds if (model, "alone", s) in picks]
                valid_gains = [picks[(model, variant, s)]["valid"] / picks[(model, "alone", s)]["valid"] - 1
                               for s in seeds if (model, "alone", s) in picks]
                row.update(gain=float(np.mean(gains)), gain_std=float(np.std(gains, ddof=1)) if len(gains) > 1 else None,
                           valid_gain=float(np.mean(valid_gains)))
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="table folders, each optionally =LABEL (renames its distilled rows)")
    parser.add_argument("--rule", action="append", default=[], help="PATIENCE:CAP, e.g. 3:30 (repeat)")
    args = parser.parse_args(argv)
    rules = [tuple(int(x) for x in rule.split(":")) for rule in (args.rule or ["3:30", "10:40"])]
    tables = {Path(t.split("=")[0]): (t.split("=", 1)[1] if "=" in t else None) for t in args.tables}
    print("| model | variant | patience:cap | epochs | valid HR@20 | test HR@20 | valid gain | test gain |")
    print("|---|---|---|---|---|---|---|---|")
    if True:
        for r in replay(tables, rules):
            std = f" ± {r['test_hr@20_std']:.4f}" if r["test_hr@20_std"] is not None else ""
            gain = (f"{r['gain']:+.0%}" + (f" ± {r['gain_std']:.0%}" if r.get("gain_std") is not None else "")) if "gain" in r else ""
            valid_gain = f"{r['valid_gain']:+.0%}" if "valid_gain" in r else ""
            print(f"| {r['model']} | {r['variant']} | {r['patience']}:{r['cap']} | {r['epochs']} | "
                  f"{r['valid_hr@20']:.4f} | {r['test_hr@20']:.4f}{std} | {valid_gain} | {gain} |")


if __name__ == "__main__":
    main()
