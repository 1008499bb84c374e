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
    encoded = _tokenizer(16).encode(["shower head"] * 2, ["chrome " * 40, "chrome"])
    assert encoded.input_ids.shape[1] == 16
    assert encoded.truncated_rows.tolist() == [True, False]
    assert encoded.truncated == 1
