"""A user's own data from a small description: formats, column mapping, checks that name file, column and rows."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from rankstill.cli import app
from rankstill.distill.bm25 import TitleIndex, bm25_scores_for
from rankstill.distill.data import catalogue, limit_queries, load_judgments
from rankstill.distill.dataset import DataConfig, DataError, load_dataset
from rankstill.distill.label import homedepot, plan_pairs

from distill_slice import data_section, write_slice


@pytest.fixture(scope="module")
def paths(judgments, tmp_path_factory):
    return write_slice(judgments, tmp_path_factory.mktemp("slice"), queries_per_split=4, distractors=50, extra_queries=2)


def config(**data) -> DataConfig:
    return DataConfig(**data)


def test_other_schema_and_formats_read_as_the_original(paths, judgments):
    dataset = load_dataset(config(**data_section(paths)))
    original = judgments.set_index(["query", "product_uid"])
    for row in dataset.judgments.itertuples():
        source = original.loc[(row.query, row.item_id)]
        assert row.item_text == source["product_title"]  # [brand, name] joined gives the title back
        assert row.gain == pytest.approx(source["gain"])  # grade 0..4 over label_range [0, 4] == (relevance-1)/2
        assert row.split == source["split"]
    assert set(dataset.queries["source"]) == {"judged", "unlabeled"}
    assert dataset.summary()["skipped"] == {}


def test_csv_tsv_jsonl_parquet_all_read(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["red drill", "blue hose"]})
    frame.to_csv(tmp_path / "items.csv", index=False)
    frame.to_csv(tmp_path / "items.tsv.gz", index=False, sep="\t")
    frame.to_json(tmp_path / "items.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"query": ["drill"]}).to_csv(tmp_path / "q.csv", index=False)
    for name in ("items.csv", "items.tsv.gz", "items.jsonl", "items.parquet"):
        data = load_dataset(config(items=tmp_path / name, queries=tmp_path / "q.csv",
                                   columns={"item_id": "id", "item_text": "text"}))
        assert list(data.items["item_text"]) == ["red drill", "blue hose"], name


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_errors_name_file_column_and_rows(tmp_path):
    items = tmp_path / "items.csv"
    pd.DataFrame({"pid": ["1", "2", "3", "2"], "title": ["a", "b", "c", "d"]}).to_csv(items, index=False)
    judged = write_jsonl(tmp_path / "j.jsonl", [{"q": "x", "pid": "1", "grade": 1}])
    columns = {"query": "q", "item_id": "pid", "item_text": "title", "label": "grade"}
    with pytest.raises(DataError, match=r"data.items: .*items.csv, column 'pid': 1 duplicate id\(s\) at rows 2, 4"):
        load_dataset(config(judgments=judged, items=items, columns=columns, label_range=[0, 3]))

    pd.DataFrame({"pid": ["1", "2"], "title": ["a", "b"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match=r"j.jsonl lacks column\(s\) \['grade'\]"):
        load_dataset(config(judgments=write_jsonl(tmp_path / "j.jsonl", [{"q": "x", "pid": "1"}]), items=items,
                            columns=columns, label_range=[0, 3]))
    outside = write_jsonl(tmp_path / "j.jsonl", [{"q": "x", "pid": "1", "grade": 1}, {"q": "y", "pid": "2", "grade": 7},
                                                 {"q": "z", "pid": "1", "grade": -1}])
    with pytest.raises(DataError, match=r"column 'grade': 2 label\(s\) outside label_range \[0, 3\] at rows 2, 3"):
        load_dataset(config(judgments=outside, items=items, columns=columns, label_range=[0, 3]))
    unknown = write_jsonl(tmp_path / "j.jsonl", [{"q": "x", "pid": "1", "grade": 1}, {"q": "y", "pid": "9", "grade": 2}])
    with pytest.raises(DataError, match=r"1 id\(s\) not in the catalogue .* at rows 2 \(e.g. '9'\)"):
        load_dataset(config(judgments=unknown, items=items, columns=columns, label_range=[0, 3]))
    twice = write_jsonl(tmp_path / "j.jsonl", [{"q": "x", "pid": "1", "grade": 1}, {"q": "x", "pid": "1", "grade": 2}])
    with pytest.raises(DataError, match="more than once at rows 1, 2"):
        load_dataset(config(judgments=twice, items=items, columns=columns, label_range=[0, 3]))
    with pytest.raises(DataError, match="nope.parquet not found"):
        load_dataset(config(judgments=tmp_path / "nope.parquet", columns=columns, label_range=[0, 3]))
    with pytest.raises(ValueError, match="label_range"):
        config(judgments=twice, columns=columns)


def test_empty_texts_are_skipped_and_counted_or_refused_with_strict(tmp_path):
    items = tmp_path / "items.parquet"
    pd.DataFrame({"pid": [1, 2, 3, 4], "brand": ["", "acme", None, " "], "name": ["", "drill", None, ""]}).to_parquet(items)
    queries = tmp_path / "queries.csv"
    queries.write_text('q\n"drill"\n""\n" "\nhose\n')
    data = config(items=items, queries=queries, columns={"query": "q", "item_id": "pid", "item_text": ["brand", "name"]})
    loaded = load_dataset(data)
    assert list(loaded.items["item_id"]) == ["2"] and list(loaded.items["item_text"]) == ["acme drill"]
    assert loaded.skipped == {"items: empty brand+name": 3, "queries: empty q": 2}
    with pytest.raises(DataError, match=r"items.parquet, column 'brand\+name': 3 empty value\(s\) at rows 1, 3, 4 \(refused with --strict\)"):
        load_dataset(data, strict=True)


def test_bad_data_stops_distill_before_anything_is_written(tmp_path):
    items = tmp_path / "items.csv"
    pd.DataFrame({"pid": ["1", "1"], "title": ["a", "b"]}).to_csv(items, index=False)
    (tmp_path / "q.csv").write_text("q\ndrill\n")
    out = tmp_path / "out"
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(json.dumps({"name": "x", "out": str(out), "data": {
        "items": str(items), "queries": str(tmp_path / "q.csv"),
        "columns": {"query": "q", "item_id": "pid", "item_text": "title"}}, "teacher": {"url": "http://127.0.0.1:9"}}))
    result = CliRunner().invoke(app, ["distill", str(cfg)])
    assert result.exit_code == 2 and "duplicate id" in result.output and "rows 1, 2" in result.output
    assert not out.exists()
    cfg.write_text(json.dumps({"name": "x", "out": str(out), "data": {"items": str(items)}, "teacher": {"bogus": 1}}))
    result = CliRunner().invoke(app, ["distill", str(cfg)])
    assert result.exit_code == 2 and "teacher.bogus" in result.output and "data: Value error, without judgments" in result.output


def old_plan(judgments: pd.DataFrame, k: int) -> pd.DataFrame:
    """The label plan as `rankstill label` built it before data descriptions (Home Depot columns only)."""
    products = catalogue(judgments)
    index = TitleIndex.of_products(products)
    title_of = dict(zip(products["product_uid"], products["product_title"]))
    judged = pd.DataFrame({"query": judgments["query"], "item_id": judgments["product_uid"],
                           "item_text": judgments["product_title"], "source": "judged", "split": judgments["split"],
                           "human_label": judgments["gain"].astype("float32"), "bm25_score": bm25_scores_for(judgments, index)})
    extra = [(query, item, title_of[item], "bm25", "train", None, score)
             for query, group in judgments[judgments["split"] == "train"].groupby("query", sort=False)
             for item, score in index.top_k(query, k, exclude=set(group["product_uid"]))]
    pairs = pd.concat([judged, pd.DataFrame(extra, columns=judged.columns)], ignore_index=True)
    pairs["split"] = pd.Categorical(pairs["split"], categories=("train", "validation", "test"), ordered=True)
    pairs = pairs.sort_values(["split", "query", "source"], kind="stable").reset_index(drop=True)
    return pairs.assign(split=pairs["split"].astype(str))


def test_home_depot_example_plans_exactly_the_pairs_of_the_committed_student(data_path):
    """The example config reads Home Depot into the same judged and BM25 pairs, texts, gains and splits."""
    from rankstill.distill.pipeline import load_config

    example = load_config("distill/examples/homedepot.yaml")
    assert example.data.model_dump(exclude={"judgments", "description"}) == \
        homedepot(data_path).model_dump(exclude={"judgments", "description"})
    new = plan_pairs(load_dataset(homedepot(data_path)).limit_queries(40), 8, 4096).pairs
    old = old_plan(limit_queries(load_judgments(data_path), 40), 8)
    assert len(new) == len(old) > 400
    for column in old.columns:
        a, b = (frame[column].astype(object).where(frame[column].notna(), None).tolist() for frame in (new, old))
        assert a == b, column
