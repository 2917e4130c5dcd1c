"""Diffusion of Thoughts (Ye et al. 2024, §3): layout, thoughts, scoring, votes, the fixed question, the DoT-MP loop.

The question is never noised, costs zero loss and never changes in sampling; T steps cost T + 1 network calls."""
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from reasoning_lib.data import make_splits, read_examples
from reasoning_lib.data.examples import Example
from reasoning_lib.dot import (Sampler, answers_match, build_tokenizer, encode_examples, evaluate, extract_answer,
                               get_config, majority_vote, mp_context, parse_number, self_consistency, thoughts,
                               training_pairs)
from reasoning_lib.dot.data import Layout, decode_tokens, encode_pair, generated_text, prompts
from reasoning_lib.dot.stages import RandomStepPairs, prepare_data, train_dot
from reasoning_lib.sedd import SEDD, DDiTConfig, build_graph, build_noise, dwdse_loss, save_model

EXAMPLE = Example("1 3 4 * 8 1 9", "8 4 4 3 + 0 1 3 4 5 ( 8 5 7 7 9 ) + 0 0 9 7 8 8", "#### 8 5 6 5 8 9")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("digits")


@pytest.fixture(scope="module")
def layout(tokenizer):
    return Layout.for_tokenizer(tokenizer, 44)


def tiny_sedd(layout, seed=0):
    torch.manual_seed(seed)
    model = SEDD(DDiTConfig(vocab_size=layout.num_states, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16,
                            length=layout.length))
    with torch.no_grad():  # adaLN-Zero starts as the identity: perturb so the untrained model is not uniform
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def make_sampler(layout, tokenizer, steps=4):
    return Sampler(tiny_sedd(layout), build_graph("absorb", layout.num_states), build_noise({"type": "loglinear"}),
                   tokenizer, layout, steps)


def test_layout_marks_the_question_separator_and_target(tokenizer, layout):
    ids, fixed = encode_pair(tokenizer, layout, EXAMPLE.question, f"{EXAMPLE.cot} {EXAMPLE.answer}")
    tokens = decode_tokens(tokenizer, layout, ids)
    text = " ".join(tokens)
    assert text.count("<eos> ||") == 1 and text.startswith(EXAMPLE.question + " <eos> ||")
    assert fixed.sum() == tokens.index("||") + 1 and fixed[: tokens.index("||") + 1].all()  # fixed up to and incl. ||
    assert tokens[-1] == "<eos>" and len(tokens) == layout.length  # padded with end-of-text, which is target
    assert generated_text(tokenizer, layout, ids) == f"{EXAMPLE.cot} {EXAMPLE.answer}"


def test_too_long_is_refused_or_truncated_keeping_the_final_eos(tokenizer):
    short = Layout.for_tokenizer(tokenizer, 20)
    with pytest.raises(ValueError, match="does not fit the canvas of 20"):
        encode_pair(tokenizer, short, EXAMPLE.question, EXAMPLE.cot)
    ids, fixed = encode_pair(tokenizer, short, EXAMPLE.question, f"{EXAMPLE.cot} {EXAMPLE.answer}", truncate=True)
    assert ids.shape == (20,) and int(ids[-1]) == short.eos_id and int(ids[fixed.sum() - 1]) == short.sep_id
    with pytest.warns(UserWarning, match="1 of 1 dot training sequences were truncated"):
        encode_examples(tokenizer, short, [EXAMPLE], "dot", truncate=True)


def test_tokenizer_needs_a_single_separator_token():
    plain = build_tokenizer("digits")
    with pytest.raises(ValueError, match="no single '\\|\\|' token"):
        from reasoning_lib.tokenization import build_digit_tokenizer
        Layout.for_tokenizer(build_digit_tokenizer(), 32)
    assert Layout.for_tokenizer(plain, 32).mask_id == len(plain)


def test_bpe_numbers_are_split_into_digits():
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(["he paid 1234 dollars || 1234 1234"] * 50,
                             trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<unk>", "||"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")
    before = wrapped.tokenize("paid 1234")
    from reasoning_lib.dot.data import split_numbers_into_digits
    split_numbers_into_digits(wrapped)
    after = wrapped.tokenize("paid 1234")
    assert any("1234" in t for t in before)
    assert [t for t in after if any(c.isdigit() for c in t)] == ["1", "2", "3", "4"]
    assert wrapped.decode(wrapped("paid 1234")["input_ids"]) == "paid 1234"


def test_mp_pairs_expand_every_step_and_rebuild_the_rationale():
    steps = thoughts(EXAMPLE)
    pairs = training_pairs(EXAMPLE, "dot_mp")
    assert len(pairs) == 3 + 1 and pairs[-1][1] == EXAMPLE.answer  # 3 partial products, then '#### ans'
    assert " ".join(target for _, target in pairs) == f"{EXAMPLE.cot} {EXAMPLE.answer}"
    assert [source for source, _ in pairs] == [mp_context(EXAMPLE.question, steps[:i]) for i in range(4)]
    assert training_pairs(EXAMPLE, "answer_only") == [(EXAMPLE.question, EXAMPLE.answer)]
    with pytest.raises(ValueError, match="variant"):
        training_pairs(EXAMPLE, "plaid")


def test_gsm8k_thoughts_are_equations(shared_file):
    examples = read_examples(shared_file("gsm8k/valid.txt"))[:50]
    for example in examples:
        pairs = training_pairs(example, "dot_mp")
        assert len(pairs) == example.cot.count("<<") + 1 and pairs[-1][1].startswith("####")
        assert " ".join(t for _, t in pairs) == f"{example.cot} {example.answer}".strip()


def test_published_multiplication_lines_expand_into_partial_products(shared_file):
    for example in read_examples(shared_file("4_by_4_mult/valid.txt"))[:50]:
        steps = thoughts(example)
        assert len(steps) == 4 + 1 and all(s.endswith("+") for s in steps[:3])
        assert " ".join(steps) == f"{example.cot} {example.answer}"


def test_fixed_positions_are_never_noised_and_cost_exactly_zero(tokenizer, layout):
    ids, fixed = encode_examples(tokenizer, layout, make_splits(3, 8, 0, 0, seed=1).train, "dot")
    graph, noise = build_graph("absorb", layout.num_states), build_noise({"type": "loglinear"})
    for sigma in (0.01, 1.0, 50.0):
        noisy = graph.sample_transition(ids, torch.full((len(ids), 1), sigma), fixed)
        assert torch.equal(noisy[fixed], ids[fixed])
    assert (graph.sample_transition(ids, torch.full((len(ids), 1), 50.0), fixed)[~fixed] == layout.mask_id).all()

    class FreeScores(torch.nn.Module):  # the log-scores themselves are the parameters
        def __init__(self):
            super().__init__()
            self.log_score = torch.nn.Parameter(torch.randn(*ids.shape, layout.num_states))

        def forward(self, x, sigma):
            return self.log_score

    free = FreeScores()
    loss = dwdse_loss(free, graph, noise, ids, fixed, t=torch.full((len(ids),), 0.9), generator=torch.Generator().manual_seed(0))
    loss.sum().backward()
    assert free.log_score.grad[fixed].abs().max() == 0 and free.log_score.grad[~fixed].abs().max() > 0
    assert torch.equal(dwdse_loss(free, graph, noise, ids, torch.ones_like(fixed)), torch.zeros(len(ids)))


def test_sampling_never_changes_the_question_and_counts_model_calls(tokenizer, layout):
    sampler = make_sampler(layout, tokenizer, steps=5)
    questions = [e.question for e in make_splits(3, 3, 0, 0, seed=2).train]
    out = sampler.dot(questions, torch.Generator().manual_seed(0), record_chain=True)
    want, fixed = prompts(tokenizer, layout, questions)
    assert out.nfe == [6, 6, 6] and len(out.chains[0]) == 5 + 2  # start, 5 steps, denoised
    for i in range(3):
        for state in out.chains[i]:
            assert torch.equal(state[fixed[i]], want[i][fixed[i]])
        assert (out.chains[i][-1] != layout.mask_id).all()  # the denoiser leaves no mask
    assert (out.chains[0][0][~fixed[0]] == layout.mask_id).all()


def test_mp_passes_keep_their_growing_prefix_fixed(tokenizer, layout):
    sampler = make_sampler(layout, tokenizer, steps=3)
    question = make_splits(3, 1, 0, 0, seed=3).train[0].question
    out = sampler.dot_mp([question], max_passes=3, generator=torch.Generator().manual_seed(0), record_chain=True)
    q_ids = tokenizer(question)["input_ids"]
    assert out.nfe[0] == out.passes[0] * 4 <= 3 * 4
    for state in out.chains[0]:
        assert state[: len(q_ids)].tolist() == q_ids
        assert layout.sep_id in state.tolist()


class ScriptedSampler(Sampler):
    """Replies to each pass with scripted thoughts, recording the sources it was asked to continue."""

    def __init__(self, layout, tokenizer, script):
        super().__init__(None, None, None, tokenizer, layout, steps=2)
        self.script, self.asked = script, []

    def _pass(self, sources, generator, record):
        self.asked.append(list(sources))
        replies = [self.script[next(q for q in self.script if s.startswith(q))].pop(0) for s in sources]
        return replies, type("Out", (), {"nfe": 3, "chain": [], "times": []})()


def test_mp_stops_at_the_answer_marker_and_rebuilds_the_context_as_in_training(tokenizer, layout):
    q1, q2 = "1 2 * 3 4", "5 6 * 7 8"
    script = {q1: ["3 6 +", "#### 8 0 4"], q2: ["0 5 +", "1 2 +", "3 4", "5 6"]}
    sampler = ScriptedSampler(layout, tokenizer, script)
    out = sampler.dot_mp([q1, q2], max_passes=3)
    assert out.passes == [2, 3] and out.nfe == [6, 9]
    assert out.answers == ["8 0 4", None] and out.texts[0] == "3 6 + #### 8 0 4"
    assert sampler.asked[1] == [f"{q1} 3 6 +", f"{q2} 0 5 +"]
    assert sampler.asked[2] == [f"{q2} 0 5 + 1 2 +"]  # the finished row is never sampled again


def test_mp_context_sent_to_the_sampler_matches_training(tokenizer, layout):
    asked = []

    class Recorder(Sampler):
        def _pass(self, sources, generator, record):
            asked.append(sources)
            thought = [thoughts(EXAMPLE)[0], "#### 1"][len(asked) - 1]
            return [thought], type("Out", (), {"nfe": 1, "chain": [], "times": []})()

    Recorder(None, None, None, tokenizer, layout).dot_mp([EXAMPLE.question], max_passes=5)
    assert asked[1] == [training_pairs(EXAMPLE, "dot_mp")[1][0]]
    ids, fixed = prompts(tokenizer, layout, asked[1])
    assert " ".join(decode_tokens(tokenizer, layout, ids[0][fixed[0]])) == f"{EXAMPLE.question} 8 4 4 3 + <eos> ||"


def test_scoring_extracts_after_the_first_marker_and_compares_numbers(tokenizer, layout):
    assert extract_answer("<<1+1=2>> #### 2 #### 3") == "2 #### 3" and extract_answer("no marker") is None
    assert parse_number("-3") == -3 and parse_number("2.5") == parse_number("2.50") and parse_number("1,000") == 1000
    assert parse_number("8 5 6") is None and parse_number("12a") is None and parse_number("") is None
    assert answers_match("-3", "-3") and answers_match("1,000", "1000") and not answers_match("3", "-3")
    assert not answers_match(None, "3") and answers_match("yes", "yes") and not answers_match("12", "twelve")
    assert not answers_match("5 6 1", "0 5 6 1")  # 165 is not 1650: reversed products match digit by digit
    never_ends = torch.tensor(tokenizer(f"{EXAMPLE.question} <eos> || #### 1 2")["input_ids"])
    assert generated_text(tokenizer, layout, never_ends) is None  # no end-of-text after the answer: wrong
    golds = [extract_answer(e.answer) for e in make_splits(3, 20, 0, 0, seed=4).train]
    assert self_consistency([golds], golds) == [1.0]


def test_vote_tie_rules_and_self_consistency_curve():
    assert majority_vote(["a", "b", "b", "a"]) == "a" and majority_vote(["a", "b", "b", "a"], "reference") == "b"
    assert majority_vote([None, "7", None]) is None  # unparseable answers vote too
    with pytest.raises(ValueError, match="tie_rule"):
        majority_vote(["a"], "random")
    golds = ["1", "2", "3"]
    runs = [["1", "0", "0"], ["1", "2", "3"], ["0", "2", "3"]]
    curve = self_consistency(runs, golds)
    assert curve[0] == pytest.approx(1 / 3)  # SC@1 is run 0's accuracy
    assert curve[2] == pytest.approx(1.0)  # 2 of 3 runs right on every question
    assert self_consistency([runs[2], runs[1], runs[0]], golds)[2] == curve[2]  # no ties: order does not matter
    with pytest.raises(ValueError, match="every run"):
        self_consistency([["1"]], golds)


def test_random_step_pairs_draw_real_pairs(tokenizer, layout):
    rows = RandomStepPairs(tokenizer, layout, [EXAMPLE] * 4, seed=0)
    targets = {generated_text(tokenizer, layout, rows[i % 4]["input_ids"]) for i in range(40)}
    assert targets <= set(thoughts(EXAMPLE)) and len(targets) > 1
    assert rows.input_ids.shape == (16, layout.length)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="BPE"):
        get_config("tiny", task="gsm8k")
    with pytest.raises(ValueError, match="mp_pairs"):
        get_config("tiny", mp_pairs="some")
    with pytest.raises(ValueError, match="task"):
        get_config("tiny", task="3x4")
    assert get_config("paper", task="gsm8k").num_test == 1319


def test_fine_tuning_starts_from_the_given_checkpoint(tmp_path):
    config = get_config("smoke", max_steps=3)
    tokenizer, layout, splits = prepare_data(config, 0)
    start = tiny_sedd(layout, seed=5)
    save_model(start, tmp_path / "start", "absorb", {"type": "loglinear"})
    tuned, history = train_dot("dot", get_config("smoke", max_steps=3, init=str(tmp_path / "start")), splits.train,
                               tokenizer, layout, tmp_path / "run", device="cpu")
    assert len(history) >= 1 and tuned.config.hidden_size == 32
    moved = [(a - b).abs().max() for a, b in zip(tuned.state_dict().values(), start.state_dict().values())]
    assert 0 < max(moved) < 0.5  # a few small steps away from the checkpoint, not a fresh model
    with pytest.raises(ValueError, match="states but the data needs"):
        small = SEDD(DDiTConfig(vocab_size=7, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, length=8))
        save_model(small, tmp_path / "small", "absorb", {"type": "loglinear"})
        train_dot("dot", get_config("smoke", init=str(tmp_path / "small")), splits.train, tokenizer, layout, tmp_path / "r2")


@pytest.mark.slow
def test_dot_learns_the_rationale_format_of_2x2_multiplication(tmp_path):
    import re

    config = get_config("smoke", num_train=2000, num_test=64, length=22, max_steps=500, hidden_size=64, n_blocks=2,
                        n_heads=4, cond_dim=32, batch_size=32, warmup_steps=20, ema=0.99)
    tokenizer, layout, splits = prepare_data(config, 0)
    model, history = train_dot("dot", config, splits.train, tokenizer, layout, tmp_path, device="cpu")
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    from reasoning_lib.dot import make_sampler as sampler_for
    run = evaluate(sampler_for(model, config, tokenizer, layout, 16), "dot", splits.test)
    shape = re.compile(r"^\d \d \d \+ 0 \d \d \d #### \d \d \d \d$")  # two partial products, a 4-digit answer
    well_formed = sum(bool(t and shape.match(t)) for t in run.generation.texts) / len(run.generation.texts)
    assert well_formed > 0.8, run.generation.texts[:4]
    assert run.mean_nfe == 17


def test_long_chains_are_thinned_to_a_small_responsive_figure():
    from reasoning_lib import viz

    rng = torch.Generator().manual_seed(0)
    def chain(states):  # a GSM8K-sized canvas (128 tokens) filling in over `states` steps
        order = torch.randperm(128, generator=rng).tolist()
        return [["▒" if i in set(order[: 128 - (128 * k) // (states - 1)]) else f"t{i}" for i in range(128)]
                for k in range(states)]
    dot_chain, mp_chain = chain(66), chain(10 * 66)
    frames, labels = viz.align_chains({"DoT": dot_chain, "DoT-MP": mp_chain},
                                      {"DoT": [f"s{k}" for k in range(66)], "DoT-MP": [f"p{k}" for k in range(660)]})
    assert len(labels) == 80 and frames["DoT"][-1] == dot_chain[-1] and frames["DoT-MP"][-1] == mp_chain[-1]
    fig = viz.token_chain(frames, labels, "long", per_line=16)
    assert len(fig.frames) == 80 and len(fig.to_json()) < 3_000_000  # a few MB at most, even for GSM8K


def test_canvas_text_brackets_the_question_and_counts_the_padding(tokenizer, layout):
    from reasoning_lib.dot import canvas_text

    ids, fixed = encode_pair(tokenizer, layout, EXAMPLE.question, f"{EXAMPLE.cot} {EXAMPLE.answer}")
    text = canvas_text(tokenizer, layout, ids, fixed)
    tokens = decode_tokens(tokenizer, layout, ids)
    padding = len(tokens) - len(" ".join(tokens).rstrip(" <eos>").split()) - 1  # all but the first trailing E
    assert text.startswith("[" + EXAMPLE.question.split()[0] + "]") and text.endswith(f"(+{padding} E)")
    assert "[||]" in text and f"{EXAMPLE.answer} <eos>  (+" in text
