import pytest

from reasoning_lib.data import IGNORE_INDEX, collate, encode_examples, make_splits, parse_line
from reasoning_lib.tokenization import load_tokenizer


@pytest.fixture(scope="module")
def examples():
    return make_splits(3, 20, 0, 0, seed=3).train


def test_every_symbol_is_one_token_and_decoding_restores_the_text(digit_tokenizer, examples):
    text = examples[0].to_line().replace("||", " ")
    ids = digit_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split())
    assert digit_tokenizer.unk_token_id not in ids
    assert digit_tokenizer.decode(ids) == text


def test_unknown_symbols_map_to_unk(digit_tokenizer):
    ids = digit_tokenizer("1 x 2", add_special_tokens=False)["input_ids"]
    assert ids[1] == digit_tokenizer.unk_token_id


def test_saved_tokenizer_loads_back_identically(digit_tokenizer, tmp_path, examples):
    digit_tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    text = examples[1].to_line().replace("||", " ")
    assert again(text)["input_ids"] == digit_tokenizer(text)["input_ids"]
    assert (again.eos_token_id, again.pad_token_id) == (digit_tokenizer.eos_token_id, digit_tokenizer.pad_token_id)


def test_hub_tokenizer_offline_gives_a_clear_error():
    with pytest.raises(FileNotFoundError, match="could not be loaded: .*HF_HUB_OFFLINE"):
        load_tokenizer("some-org/some-tokenizer")


@pytest.mark.parametrize("fmt", ["only", "nocot", "cot", "all"])
def test_separator_and_labels_follow_the_reference_format(digit_tokenizer, examples, fmt):
    eos = digit_tokenizer.eos_token_id
    for encoded in encode_examples(digit_tokenizer, examples, fmt):
        assert encoded.input_ids[encoded.sep] == eos
        assert eos not in encoded.input_ids[: encoded.sep], "the separator must be the first E"
        assert all(label == IGNORE_INDEX for label in encoded.labels[: encoded.sep + 1])
        assert encoded.labels[encoded.sep + 1 :] == encoded.input_ids[encoded.sep + 1 :]
        if fmt in ("cot", "all"):
            assert encoded.input_ids[encoded.cot_end] == eos
            assert encoded.input_ids.count(eos) == (2 if fmt == "cot" else 3)


def test_formats_share_the_prefix_up_to_the_separator(digit_tokenizer, examples):
    nocot = encode_examples(digit_tokenizer, examples, "nocot")
    cot = encode_examples(digit_tokenizer, examples, "all")
    for a, b in zip(nocot, cot):
        assert a.sep == b.sep and a.input_ids[: a.sep + 1] == b.input_ids[: b.sep + 1]


def test_three_by_three_lengths(digit_tokenizer, examples):
    # question 7 symbols + E; CoT 3 terms (4, 5+bracket 5+2, 6) + 2 '+' = 24 symbols; answer '####' + 6 digits.
    encoded = encode_examples(digit_tokenizer, examples[:1], "all")[0]
    assert (encoded.sep, encoded.cot_end - encoded.sep - 1, len(encoded.input_ids) - encoded.cot_end - 2) == (7, 24, 7)


def test_too_long_sequence_raises(digit_tokenizer, examples):
    with pytest.raises(ValueError, match="max_length=10"):
        encode_examples(digit_tokenizer, examples, "all", max_length=10)


def test_collate_pads_right_with_pad_and_ignore(digit_tokenizer):
    batch = encode_examples(digit_tokenizer, [parse_line("1 * 2||2 #### 2"), parse_line("1 2 * 3||3 6 #### 3 6")], "all")
    out = collate(batch, digit_tokenizer.pad_token_id)
    short = len(batch[0].input_ids)
    assert out["input_ids"].shape == out["labels"].shape == out["attention_mask"].shape == (2, len(batch[1].input_ids))
    assert (out["input_ids"][0, short:] == digit_tokenizer.pad_token_id).all()
    assert (out["labels"][0, short:] == IGNORE_INDEX).all() and out["attention_mask"][0].sum() == short
    assert out["sep"].tolist() == [batch[0].sep, batch[1].sep]


def test_gpt2_pieces_match_whole_string_tokenization(shared_file):
    """The implicit-CoT reference's ``src/data.py`` sequences with the real GPT-2 tokenizer (runs only where it is
    cached locally: nothing is downloaded)."""
    from transformers import AutoTokenizer

    from reasoning_lib.data import read_examples

    try:
        tokenizer = AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
    except OSError:
        pytest.skip("the gpt2 tokenizer is not in the local Hugging Face cache")
    tokenizer.pad_token = tokenizer.eos_token
    examples = read_examples(shared_file("4_by_4_mult/test_bigbench.txt"))[:50]
    for example, encoded in zip(examples, encode_examples(tokenizer, examples, "all")):
        e = tokenizer.eos_token
        whole = tokenizer(f" {example.question} {e} {example.cot} {e} {example.answer} {e}")["input_ids"]
        assert encoded.input_ids == whole
        assert encoded.input_ids[encoded.sep - 1] == 220 and encoded.sep == 10 and encoded.cot_end - encoded.sep + 1 == 49
