"""MovieLens sequences: time split without leakage, DLLM2Rec row format, loud failures on bad files."""

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
    assert sum(len(f) for f in frames.values()) == len(ratings) - ratings["user_id"].nunique()

    index_of = {m: i for i, m in enumerate(sorted(items["movie_id"]))}
    test = seq_data.split("test")
    row = int(np.argmax(test.lengths == 10))  # a full window
    target_time = frames["test"]["timestamp"].iloc[row]
    target_movie = sorted(items["movie_id"])[test.targets[row]]
    user = ratings[(ratings["movie_id"] == target_movie) & (ratings["timestamp"] == target_time)]["user_id"]
    earlier = ratings[ratings["user_id"].isin(user) & (ratings["timestamp"] <= target_time)]
    earlier_ids = {index_of[m] for m in earlier["movie_id"]}
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
