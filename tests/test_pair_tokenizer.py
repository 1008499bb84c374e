import numpy as np
from tokenizers import Tokenizer

from rankstill.distill.teacher import default_backbone
from rankstill.pair_tokenizer import PairTokenizer

TOKENIZER = default_backbone() / "tokenizer.json"


def _tokenizer(max_length):
    return PairTokenizer.from_file(TOKENIZER, max_length)


def test_pads_to_longest_pair_in_batch_only():
    encoded = _tokenizer(64).encode(["drill", "drill"], ["bit", "a much longer cordless drill title"])
    raw = Tokenizer.from_file(str(TOKENIZER))
    raw.no_padding()
    raw.no_truncation()
    longest = len(raw.encode("drill", "a much longer cordless drill title").ids)
    assert encoded.input_ids.shape == (2, longest)
    assert encoded.attention_mask.sum(axis=1).tolist() == [len(raw.encode("drill", "bit").ids), longest]
    # Second segment gets token type 1.
    assert set(encoded.token_type_ids[1][encoded.attention_mask[1] == 1].tolist()) == {0, 1}


def test_truncates_to_max_length_and_flags_it():
    pairs = _tokenizer(16).tokenize(["shower head"] * 2, ["chrome " * 40, "chrome"])
    assert pairs.pad().input_ids.shape[1] == 16
    assert pairs.truncated.tolist() == [True, False]


def test_chunks_are_length_sorted_padded_to_their_own_longest_and_trade_padding_for_runs():
    documents = ["a much longer cordless drill title with many words", "bit", "drill bit set", "x",
                 "cordless drill", "hammer drill with case", "bit"]
    pairs = _tokenizer(64).tokenize(["drill"] * len(documents), documents)
    for max_pairs, overhead in ((2, 0.0), (3, 5.0), (7, 1000.0)):
        chunks = list(pairs.chunks(max_pairs, overhead))
        rows = np.concatenate([r for r, _ in chunks])
        assert sorted(rows.tolist()) == list(range(len(documents)))
        assert (np.diff(pairs.lengths[rows]) >= 0).all()  # shortest pairs first
        for chunk_rows, batch in chunks:
            assert len(chunk_rows) <= max_pairs
            assert batch.input_ids.shape == (len(chunk_rows), pairs.lengths[chunk_rows].max())
            for out, row in enumerate(chunk_rows):
                assert batch.input_ids[out, : pairs.lengths[row]].tolist() == pairs.ids[row]
                assert batch.attention_mask[out].sum() == pairs.lengths[row]
        padded = sum(batch.input_ids.size for _, batch in chunks)
        if overhead == 0.0:  # runs are free: no padding at all
            assert padded == pairs.lengths.sum()
        if overhead == 1000.0:  # runs are dear: as few as the size bound allows
            assert len(chunks) == 1


def _library_encoding(max_length, queries, documents):
    raw = Tokenizer.from_file(str(TOKENIZER))
    raw.no_padding()
    raw.enable_truncation(max_length, strategy="longest_first")
    return raw.encode_batch(list(zip(queries, documents)))


def test_assembled_pairs_equal_the_library_encoding_on_real_and_long_pairs(judgments):
    sample = judgments.sample(3000, random_state=0)
    queries, documents = list(sample["query"]), list(sample["product_title"])
    # Over-long cases: either side long, both long, equal lengths, odd and even budgets.
    long_text = "stainless steel cordless drill " * 30
    queries += [long_text, "drill", long_text, "a " * 40, "b " * 41]
    documents += ["drill", long_text, long_text + "x", "c " * 40, "d " * 40]
    for max_length in (16, 17, 64):
        tokenizer = _tokenizer(max_length)
        assert tokenizer._assemble
        pairs = tokenizer.tokenize(queries, documents)
        encoded = pairs.pad()
        for row, expected in enumerate(_library_encoding(max_length, queries, documents)):
            n = len(expected.ids)
            assert encoded.input_ids[row, :n].tolist() == expected.ids
            assert encoded.token_type_ids[row, :n].tolist() == expected.type_ids
            assert encoded.attention_mask[row].sum() == n
            assert pairs.truncated[row] == bool(expected.overflowing)


def test_cache_is_bounded_and_gives_the_same_ids():
    tokenizer = PairTokenizer.from_file(TOKENIZER, 32)
    tokenizer._cache_size = 3
    first = tokenizer.encode(["q"] * 4, ["a b", "c d", "e f", "g h"])
    assert len(tokenizer._pieces) == 3
    again = tokenizer.encode(["q"] * 4, ["a b", "c d", "e f", "g h"])
    assert (first.input_ids == again.input_ids).all()


def _cost(groups, lengths, overhead):
    return sum(overhead + (stop - start) * lengths[stop - 1] for start, stop in groups)


def test_length_groups_cost_no_more_than_any_other_cut():
    from itertools import combinations

    from rankstill.pair_tokenizer import _best_groups

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 11))
        lengths = np.sort(rng.integers(3, 9, n))  # few distinct lengths: many ties
        max_size, overhead = int(rng.integers(1, n + 2)), float(rng.choice([0.0, 2.5, 16.0, 100.0]))
        groups = _best_groups(lengths, max_size, overhead)
        assert groups[0][0] == 0 and groups[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
        assert all(0 < stop - start <= max_size for start, stop in groups)
        every_cut = (list(zip((0, *cuts), (*cuts, n))) for k in range(n) for cuts in combinations(range(1, n), k))
        allowed = [g for g in every_cut if all(stop - start <= max_size for start, stop in g)]
        assert _cost(groups, lengths, overhead) == min(_cost(g, lengths, overhead) for g in allowed)
