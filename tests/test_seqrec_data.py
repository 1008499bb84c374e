"""Sequences from MovieLens, plain logs and DLLM2Rec folders: time split without leakage, DLLM2Rec
row format, placeholders for missing texts, loud failures on bad files."""

import numpy as np
import pandas as pd
import pytest

from rankstill.distill.seqrec.data import load_movielens, read_split

from conftest import MOVIELENS


def test_splits_follow_time_and_histories_are_earlier_interactions_of_the_same_user(seq_data):
    frames = {name: pd.read_csv(seq_data.folder / f"{name}.csv") for name in ("train", "valid", "test")}
    assert frames["train"]["timestamp"].max() < frames["valid"]["timestamp"].min()
    assert frames["valid"]["timestamp"].max() < frames["test"]["timestamp"].min()
    ratings, items = load_movielens(MOVIELENS)
    assert sum(len(f) for f in frames.values()) == len(ratings) - ratings["user"].nunique()

    index_of = {m: i for i, m in enumerate(sorted(items["id"]))}
    test = seq_data.split("test")
    row = int(np.argmax(test.lengths == 10))  # a full window
    target_time = frames["test"]["timestamp"].iloc[row]
    target_movie = sorted(items["id"])[test.targets[row]]
    user = ratings[(ratings["item"] == target_movie) & (ratings["timestamp"] == target_time)]["user"]
    earlier = ratings[ratings["user"].isin(user) & (ratings["timestamp"] <= target_time)]
    earlier_ids = {index_of[m] for m in earlier["item"]}
    assert set(test.history[row]) <= earlier_ids  # every history item was seen before (or with) the target


def test_rows_use_dllm2rec_padding(seq_data):
    train = seq_data.split("train")
    assert train.pad_id == seq_data.num_items == 1682
    short = np.argmax(train.lengths < 10)
    assert (train.history[short, train.lengths[short]:] == train.pad_id).all()
    assert (train.history[short, :train.lengths[short]] < train.pad_id).all()


@pytest.mark.parametrize("seq, length, target, problem", [
    ("[1, 2, 1682]", 2, 1682, "item ids outside"),
    ("[1, 1682, 1682]", 2, 5, "padding"),
    ("[1, 2, 3]", 4, 5, "len_seq"),
])
def test_bad_rows_fail_loudly(tmp_path, seq, length, target, problem):
    path = tmp_path / "train.csv"
    pd.DataFrame({"seq": [seq], "len_seq": [length], "next": [target]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=problem):
        read_split(path, 1682)


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "train.csv"
    pd.DataFrame({"seq": ["[1]"], "target": [2]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="len_seq"):
        read_split(path, 1682)


# ---------------------------------------------------------------- DLLM2Rec folders and plain logs

def write_like_dllm2rec(folder, seq_data, drop_title_of=(), with_statis=True):
    """MovieLens rows written as DLLM2Rec's repository has its data: quoted lists, `next` as a float,
    a pickled data_statis.df, and `title<TAB>id` lines in id2name.txt (written here, not by the code under test)."""
    folder.mkdir()
    for name, file_name in (("train", "train_data.csv"), ("valid", "val_data.csv"), ("test", "test_data.csv")):
        rows = seq_data.split(name)
        pd.DataFrame({"seq": [str(list(map(int, s))) for s in rows.history], "len_seq": rows.lengths,
                      "next": rows.targets.astype(float)}).to_csv(folder / file_name, index=False)
    if with_statis:
        pd.DataFrame({"seq_size": [seq_data.window], "item_num": [seq_data.num_items]}).to_pickle(folder / "data_statis.df")
    titles = ["" if i in drop_title_of else t for i, t in enumerate(seq_data.items["title"])]
    (folder / "id2name.txt").write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(titles)), encoding="utf-8")
    return folder


def test_dllm2rec_folder_reads_as_it_is(seq_data, tmp_path):
    from rankstill.distill.seqrec.data import MissingTextWarning, SeqData, write_dllm2rec_dataset

    source = write_like_dllm2rec(tmp_path / "ml", seq_data, drop_title_of={3, 7})
    with pytest.warns(MissingTextWarning, match="2 of 1682 items have no text"):
        stats = write_dllm2rec_dataset(source, tmp_path / "out")
    data = SeqData.open(tmp_path / "out")
    assert data.num_items == 1682 and data.window == seq_data.window and stats["exclude_history"]
    for name in ("train", "valid", "test"):
        read, original = data.split(name), seq_data.split(name)
        assert (read.history == original.history).all() and (read.targets == original.targets).all()
        assert (read.lengths == original.lengths).all()
    assert data.items["title"][0] == seq_data.items["title"][0]
    assert data.items["title"][3] == "item 3" and data.items["title"][7] == "item 7"
    assert list(data.items["id"]) == list(range(1682))


def test_dllm2rec_item_count_comes_from_the_padding_without_data_statis(seq_data, tmp_path):
    from rankstill.distill.seqrec.data import SeqData, write_dllm2rec_dataset

    write_dllm2rec_dataset(write_like_dllm2rec(tmp_path / "ml", seq_data, with_statis=False), tmp_path / "out")
    assert SeqData.open(tmp_path / "out").num_items == 1682


def test_dllm2rec_ids_outside_the_catalogue_are_named(seq_data, tmp_path):
    from rankstill.distill.seqrec.data import write_dllm2rec_dataset

    source = write_like_dllm2rec(tmp_path / "ml", seq_data)
    test = pd.read_csv(source / "test_data.csv")
    test.loc[5, "next"] = 1700.0
    test.to_csv(source / "test_data.csv", index=False)
    with pytest.raises(ValueError, match=r"test_data.csv: item ids outside 0..1681.*\[1700\]"):
        write_dllm2rec_dataset(source, tmp_path / "out")
    test.loc[5, "next"] = 3.0
    test.to_csv(source / "test_data.csv", index=False)
    (source / "id2name.txt").write_text("Some film\t1682\n")
    with pytest.raises(ValueError, match=r"id2name.txt: item ids outside 0..1681: \[1682\]"):
        write_dllm2rec_dataset(source, tmp_path / "out2", exclude_history=True)


def test_cli_reads_a_plain_log_with_a_column_mapping_and_empty_texts(tmp_path):
    from typer.testing import CliRunner

    from rankstill.cli import app
    from rankstill.distill.seqrec.data import SeqData

    ratings, items = load_movielens(MOVIELENS)
    ratings = ratings[ratings["user"] <= 200]
    log = ratings.rename(columns={"user": "who", "item": "what", "timestamp": "when"})
    log["when"] = pd.to_datetime(log["when"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S")  # dates, not numbers
    log.to_csv(tmp_path / "log.csv", index=False)
    catalogue = items.rename(columns={"id": "sku", "title": "name"})
    catalogue.loc[[0, 10, 20], "name"] = ["", "   ", None]
    catalogue.to_csv(tmp_path / "catalogue.tsv", sep="\t", index=False)
    runner = CliRunner()
    arguments = ["seq", "data", "--interactions", str(tmp_path / "log.csv"), "--items", str(tmp_path / "catalogue.tsv"),
                 "--user-column", "who", "--item-column", "what", "--time-column", "when", "--id-column", "sku",
                 "--text-column", "name", "--window", "5", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "3 of 1682 items have no text" in result.output
    data = SeqData.open(tmp_path / "out")
    assert data.window == 5 and data.items["title"][10] == "item 11"  # placeholder names the catalogue id
    rows = sum(len(data.split(name)) for name in ("train", "valid", "test"))
    assert rows == len(ratings) - ratings["user"].nunique()
    frames = [pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in ("train", "valid", "test")]
    assert frames[0]["timestamp"].max() < frames[1]["timestamp"].min() <= frames[1]["timestamp"].max() < frames[2]["timestamp"].min()

    log.loc[log.index[:3], "what"] = [99999, 99998, 99999]
    log.to_csv(tmp_path / "log.csv", index=False)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1
    assert "item ids not in the catalogue" in result.output and "[99999, 99998]" in result.output


def test_empty_titles_never_reach_the_text_encoder_as_nan(seq_data, tmp_path):
    import shutil

    from rankstill.distill.seqrec.data import MissingTextWarning, SeqData
    from rankstill.distill.seqrec.teacher import title_embeddings
    from rankstill.distill.teacher import default_backbone

    folder = tmp_path / "data"
    shutil.copytree(seq_data.folder, folder)
    items = pd.read_csv(folder / "items.csv")
    items.loc[[1, 2], "title"] = ["", None]
    items.loc[4, "title"] = "NA"  # a real title pandas would read as NaN
    items.to_csv(folder / "items.csv", index=False)
    with pytest.warns(MissingTextWarning, match="2 of 1682"):
        data = SeqData.open(folder)
    titles = data.items["title"].tolist()
    assert titles[1] == "item 2" and titles[2] == "item 3" and titles[4] == "NA"
    embeddings = title_embeddings(titles[:6], default_backbone())
    assert embeddings.shape[0] == 6 and torch_isfinite(embeddings)


def torch_isfinite(tensor) -> bool:
    return bool(tensor.isfinite().all())
