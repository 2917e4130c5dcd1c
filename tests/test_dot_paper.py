"""Diffusion of Thoughts at the ``paper`` preset with GPT-2's real BPE on the published files (Ye et al. 2024, §4;
the reference's SEDD branch ``HKUNLP/diffusion-of-thoughts@dot-sedd``, ``data.py``): how numbers are tokenized,
canvases that would cut answers, and GSM8K prompts longer than the canvas. Every number below was measured on the
published 4x4 / 5x5 ``test_bigbench.txt`` and GSM8K ``test.txt``."""
import functools
import warnings

import pytest
import torch

from hub_layout import gpt2_tokenizer
from reasoning_lib.data import make_splits, read_examples
from reasoning_lib.dot import Sampler, build_tokenizer, evaluate, get_config, make_sampler, prepare_data, train_dot
from reasoning_lib.dot import data as dot_data
from reasoning_lib.dot.data import VARIANTS, Layout, encode_examples, prompts
from reasoning_lib.sedd import SEDD, DDiTConfig, build_graph, build_noise

FOUR, FIVE, GSM8K = "4_by_4_mult/test_bigbench.txt", "5_by_5_mult/test_bigbench.txt", "gsm8k/test.txt"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """GPT-2's tokenizer in a local folder, padding with end-of-text as ``reasoning_lib.tokenization`` does."""
    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bpe(gpt2_dir):
    return build_tokenizer(str(gpt2_dir), split_digits=False)


@pytest.fixture(scope="module")
def split_bpe(gpt2_dir):
    return build_tokenizer(str(gpt2_dir), split_digits=True)


@pytest.fixture(scope="module")
def report(bpe, split_bpe):
    """``report(file, variant, split_digits)``: the 128-token canvas's :class:`Truncation` of a published file."""
    @functools.cache
    def get(path, variant, split_digits=False):
        tokenizer = split_bpe if split_digits else bpe
        return dot_data.count_truncation(tokenizer, Layout.for_tokenizer(tokenizer, 128), read_examples(path),
                                         variant, "test")
    return get


def paper(gpt2_dir, shared_file, task="5x5", file=FIVE, num_test=1000, **overrides):
    return get_config("paper", dry_run=True, task=task, tokenizer=str(gpt2_dir), num_test=num_test,
                      test_file=str(shared_file(file)), **overrides)


def token_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# 1. The reference's SEDD branch tokenizes with plain GPT-2 BPE (get_tokenizer asserts digit=False).

def test_paper_preset_tokenizes_numbers_with_plain_gpt2_bpe(gpt2_dir, shared_file, split_bpe):
    config = paper(gpt2_dir, shared_file, num_test=100)
    assert config.split_digits is False
    tokenizer, layout, splits = prepare_data(config, 0)
    assert tokenizer.tokenize(" 1 3 4 5") == ["Ġ1", "Ġ3", "Ġ4", "Ġ5"]  # one token per spaced digit
    assert split_bpe.tokenize(" 1 3 4 5") == ["Ġ", "1", "Ġ", "3", "Ġ", "4", "Ġ", "5"]  # split: each space a token
    assert layout.length == 128 and layout.sep_id == 15886 and layout.eos_id == 50256 and len(splits.test) == 100
    assert get_config("tiny").tokenizer == get_config("smoke").tokenizer == "digits"  # the digit path is untouched


@pytest.mark.parametrize("file, variant, plain, split", [
    (FOUR, "dot", 68, 121), (FOUR, "dot_mp", 67, 121), (FOUR, "answer_only", 21, 36),
    (FIVE, "dot", 100, 182), (FIVE, "dot_mp", 99, 182), (FIVE, "answer_only", 25, 44),
    (GSM8K, "dot", 241, 279),
])
def test_longest_canvas_of_the_published_test_files(report, shared_file, file, variant, plain, split):
    assert report(shared_file(file), variant).longest == plain
    assert report(shared_file(file), variant, split_digits=True).longest == split
    assert report(shared_file(file), variant).examples == len(read_examples(shared_file(file)))


# 2. A canvas that would cut answers is refused; a few cut answers are truncated and reported.

@pytest.mark.parametrize("file", [FOUR, FIVE])
def test_published_multiplication_fits_the_128_token_canvas(report, shared_file, file):
    examples = read_examples(shared_file(file))
    for variant in VARIANTS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to report
            counts = dot_data.check_truncation(report(shared_file(file), variant), 0.01)
        assert (counts.truncated, counts.answers_cut, counts.sequences) == (0, 0, len(examples) * (
            len(dot_data.thoughts(examples[0])) if variant == "dot_mp" else 1))
    if file == FIVE:  # numbers split into digits: every 5x5 DoT answer is cut, DoT-MP truncates half its pairs
        split = report(shared_file(file), "dot", split_digits=True)
        assert (split.truncated, split.answers_cut) == (1000, 1000)
        assert report(shared_file(file), "dot_mp", split_digits=True).truncated == 3000


def test_digit_split_bpe_on_5x5_is_refused_naming_the_counts(gpt2_dir, shared_file):
    with pytest.raises(ValueError, match=r"1000 of 1000 test answers \(dot\) lose tokens on the canvas of length=128 "
                                         r"\(1000 of 1000 sequences truncated, the longest needs 182 tokens\).*"
                                         r"max_truncated_fraction=0.01.*raise length to at least 182"):
        prepare_data(paper(gpt2_dir, shared_file, split_digits=True), 0)


def test_gsm8k_truncates_and_reports_a_few_cut_answers_and_refuses_many(bpe, split_bpe, shared_file):
    examples = read_examples(shared_file(GSM8K))
    with pytest.warns(UserWarning, match=r"112 of 1319 dot test sequences were truncated to 128 tokens "
                                         r"\(10 of 1319 answers lose tokens"):
        report = dot_data.check_canvas(bpe, Layout.for_tokenizer(bpe, 128), examples, "dot", 0.01, "test")
    assert (report.truncated, report.answers_cut) == (112, 10)
    with pytest.raises(ValueError, match=r"117 of 1319 test answers \(dot\) lose tokens"):
        dot_data.check_canvas(split_bpe, Layout.for_tokenizer(split_bpe, 128), examples, "dot", 0.01, "test")


def test_training_refuses_canvases_that_cut_answers(tmp_path):
    tokenizer = build_tokenizer("digits")
    layout, examples = Layout.for_tokenizer(tokenizer, 16), make_splits(2, 32, 0, 0, seed=0).train  # 2x2 needs 21
    with pytest.raises(ValueError, match=r"32 of 32 training answers \(dot\) lose tokens on the canvas of length=16"):
        encode_examples(tokenizer, layout, examples, "dot", truncate=True, max_truncated_fraction=0.01)
    config = get_config("smoke", length=16, truncate=True)
    assert config.max_truncated_fraction == 0.01
    with pytest.raises(ValueError, match=r"32 of 32 training answers \(dot\).*raise length to at least 21"):
        train_dot("dot", config, examples, tokenizer, layout, tmp_path / "dot", device="cpu")
    with pytest.raises(ValueError, match=r"32 of 32 training answers \(dot_mp\)"):  # the random-step pairs too
        train_dot("dot_mp", get_config("smoke", length=8, truncate=True, mp_pairs="random"), examples, tokenizer,
                  Layout.for_tokenizer(tokenizer, 8), tmp_path / "mp", device="cpu")
    with pytest.raises(ValueError, match="max_truncated_fraction"):
        get_config("paper", max_truncated_fraction=1.5)


# 3. GSM8K prompts longer than the canvas keep their first tokens (the reference pops the question's end).

def test_every_gsm8k_test_prompt_fits_the_canvas(bpe, shared_file):
    questions = [e.question for e in read_examples(shared_file(GSM8K))]
    layout = Layout.for_tokenizer(bpe, 128)
    with pytest.raises(ValueError, match="does not fit the canvas of 128"):
        prompts(bpe, layout, questions)  # without truncate a long question is still refused
    with pytest.warns(UserWarning, match=r"10 of 1319 prompts were longer than 124 tokens"):
        canvases = dot_data.prompt_canvases(bpe, layout, questions, truncate=True)
    assert canvases.ids.shape == canvases.fixed.shape == (1319, 128) and sum(canvases.truncated) == 10
    for ids, fixed, question, cut in zip(canvases.ids.tolist(), canvases.fixed, questions, canvases.truncated):
        n = int(fixed.sum())
        assert fixed[:n].all() and ids[n - 2: n] == [layout.eos_id, layout.sep_id] and n <= 126  # >= 1 target + EOS
        assert set(ids[n:]) == {layout.mask_id}
        source = token_ids(bpe, question)
        assert n - 2 == min(len(source), 124) and cut == (len(source) > 124)
        assert ids[: n - 2] == source[: n - 2]  # the beginning is kept, as the reference pops the end


def test_dot_sampling_takes_long_gsm8k_questions_and_counts_them(bpe, shared_file):
    examples = read_examples(shared_file(GSM8K))
    long = [e for e in examples if len(token_ids(bpe, e.question)) > 124][:2]
    layout = Layout.for_tokenizer(bpe, 128)
    torch.manual_seed(0)
    model = SEDD(DDiTConfig(vocab_size=layout.num_states, hidden_size=16, n_blocks=1, n_heads=2, cond_dim=8,
                            length=128, dropout=0.0)).eval()
    graph, noise = build_graph("absorb", layout.num_states), build_noise({"type": "loglinear"})
    with pytest.raises(ValueError, match="does not fit"):
        evaluate(Sampler(model, graph, noise, bpe, layout, steps=1), "dot", long)
    sampler = make_sampler(model, get_config("paper", sample_steps=1), bpe, layout)
    assert sampler.truncate is True
    with pytest.warns(UserWarning, match="2 of 3 prompts"):
        run = evaluate(sampler, "dot", long + examples[:1], batch_size=3)
    assert run.generation.truncated == [True, True, False] and run.prompts_truncated == 2
    assert len(run.answers) == 3 and run.mean_nfe == 2
