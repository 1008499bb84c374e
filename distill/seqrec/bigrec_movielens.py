"""A second data set for the DLLM2Rec study, in DLLM2Rec's own folder layout: MovieLens-100K
processed the way BIGRec (the LLM teacher DLLM2Rec distils) processes MovieLens.

    positive feedback only (rating >= 4), each user's interactions in time order;
    one row per interaction that has a full window of earlier ones (BIGRec: `range(10, len)`),
    so no short histories; rows sorted by the target's time and split 80/10/10 by count.

It differs from `rankstill seq data`'s MovieLens in rows (45% fewer: positives, full windows only),
in the split (by row count, not by timestamp quantiles) and in the signal (likes, not every
rating). Written as train_data.csv, val_data.csv, test_data.csv, a pickled data_statis.df and
id2name.txt, then read like any DLLM2Rec folder with `rankstill seq data --dllm2rec`.

    python -m rankstill.distill.seqrec.bigrec_movielens OUT [--movielens DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .data import WINDOW, build_rows, write_dllm2rec_layout

MIN_RATING = 4


def bigrec_splits(folder: Path, window: int = WINDOW, min_rating: int = MIN_RATING) -> tuple[dict[str, pd.DataFrame], list[str]]:
    ratings = pd.read_parquet(folder / "MovieLens100k_data.parquet.brotli")
    items = pd.read_parquet(folder / "MovieLens100k_items.parquet.brotli", columns=["movie_id", "movie_title"]).sort_values("movie_id")
    index = {int(m): i for i, m in enumerate(items["movie_id"])}
    liked = ratings[ratings["rating"] >= min_rating].rename(columns={"user_id": "user", "movie_id": "item"})
    rows = build_rows(liked, index, window, min_history=window).sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = [int(len(rows) * 0.8), int(len(rows) * 0.9)]
    splits = {"train": rows.iloc[:cut[0]], "valid": rows.iloc[cut[0]:cut[1]], "test": rows.iloc[cut[1]:]}
    return splits, items["movie_title"].fillna("").tolist()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--movielens", type=Path, default=Path("../shared/data/movielens100k"))
    args = parser.parse_args(argv)
    splits, titles = bigrec_splits(args.movielens)
    write_dllm2rec_layout(splits, titles, WINDOW, args.out)
    print({name: len(frame) for name, frame in splits.items()})


if __name__ == "__main__":
    main()
