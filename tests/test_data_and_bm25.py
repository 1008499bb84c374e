import pytest

from rankstill.distill.bm25 import TitleIndex
from rankstill.distill.data import catalogue, load_judgments


def test_split_is_by_query(judgments):
    splits_per_query = judgments.groupby("query")["split"].nunique()
    assert splits_per_query.max() == 1
    shares = judgments.drop_duplicates("query")["split"].value_counts(normalize=True)
    assert 0.05 < shares["validation"] < 0.15 and 0.05 < shares["test"] < 0.15


def test_gain_maps_relevance_to_unit_interval(judgments):
    row = judgments.iloc[0]
    assert row["gain"] == pytest.approx((row["relevance"] - 1) / 2)
    assert judgments["gain"].between(0, 1).all()


def test_missing_data_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        load_judgments(tmp_path / "nope.csv.gz")


def test_bm25_top_k_prefers_matching_titles_and_skips_excluded(judgments):
    products = catalogue(judgments).head(3000)
    index = TitleIndex.of_products(products)
    hits = index.top_k("shower head", 5)
    titles = dict(zip(products["product_uid"], products["product_title"]))
    assert len(hits) == 5
    assert all("shower" in titles[item].lower() or "head" in titles[item].lower() for item, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    excluded = {hits[0][0]}
    again = index.top_k("shower head", 5, exclude=excluded)
    assert hits[0][0] not in {item for item, _ in again}
    assert index.top_k("zzzzqqq", 5) == []
