"""Labelling throughput of the same plan with each engine and teacher path, on this machine.

    python -m rankstill.distill.throughput --data ../shared/data/homedepot/pairs.csv.gz --max-queries 60

Teachers (all the same model, all-MiniLM-L6-v2 as a cross-encoder, so only the path differs):
PyTorch in-process (local engine; Ray engine with 1 and 2 actors), the same model exported to ONNX
in-process, and behind HTTP (`rankstill serve`, TEI /rerank) from the local and the Ray engine.
Writes a JSON report (pairs/s per path) and checks that every path stored the same labels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--max-queries", type=int, default=60)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--part-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("runs/throughput.json"))
    args = parser.parse_args()

    from rankstill.export.teacher_export import export_teacher
    from rankstill.local_server import running_server

    from .dataset import load_dataset
    from .label import RayOptions, homedepot, label
    from .ray_engine import connect
    from .teacher import default_backbone
    from .teachers import TeacherConfig, build_teacher

    from .teacher import HFTeacher

    dataset = load_dataset(homedepot(args.data))
    scratch = Path(tempfile.mkdtemp(prefix="throughput-"))
    # One fixed teacher for every path: the backbone with its (new) classification head saved once.
    HFTeacher(default_backbone(), max_length=64).save(scratch / "teacher", teacher_id="minilm", report={})
    export_teacher(scratch / "teacher", args.data, scratch / "repo", "minilm-teacher", max_length=64)
    results, stores = {}, {}

    def timed(name: str, config: TeacherConfig, engine: str = "local", actors: int = 1) -> None:
        teacher = build_teacher(config)
        began = time.perf_counter()
        store = label(teacher, dataset, scratch / name, k=args.k, part_size=args.part_size, max_queries=args.max_queries,
                      engine=engine, teacher_config=config, ray_options=RayOptions(actors=actors), progress=False)
        seconds = time.perf_counter() - began
        frame = store.read().sort_values(["query", "item_id"])
        stores[name] = frame["teacher_score"].to_numpy()
        results[name] = {"pairs": len(frame), "seconds": round(seconds, 2), "pairs_per_s": round(len(frame) / seconds, 1)}
        print(name, results[name], flush=True)

    same = dict(id="minilm", version="1", max_length=64)
    timed("pytorch-local", TeacherConfig(checkpoint=scratch / "teacher", **same))
    timed("onnx-local", TeacherConfig(onnx=scratch / "repo" / "minilm-teacher", **same))
    connect(None)  # Ray start-up is counted once, not in the runs
    timed("pytorch-ray-1-actor", TeacherConfig(checkpoint=scratch / "teacher", **same), "ray", 1)
    timed("pytorch-ray-2-actors", TeacherConfig(checkpoint=scratch / "teacher", **same), "ray", 2)
    with running_server("--model-repo", str(scratch / "repo"), "--model", "minilm-teacher", "--reload-interval", "0") as url:
        http = TeacherConfig(url=url, api="tei", concurrency=4, documents_per_call=32, **{k: v for k, v in same.items() if k != "max_length"})
        timed("http-tei-local", http)
        timed("http-tei-ray-2-actors", http, "ray", 2)
    reference = stores["pytorch-local"]
    for name, scores in stores.items():
        results[name]["max_abs_diff_vs_pytorch_local"] = float(np.max(np.abs(scores - reference)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
