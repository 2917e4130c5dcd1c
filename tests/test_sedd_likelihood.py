"""The SEDD likelihood bound per real token with its standard error, the EMA bound against training steps, and
sample quality (generative perplexity under a causal LM, quality against network evaluations)."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from reasoning_lib.sedd import data as sedd_data
from reasoning_lib.sedd import training
from reasoning_lib.sedd.evaluation import CURVE_FILE, elbo_vs_steps, load_ema_weights, read_elbo_curve
from reasoning_lib.sedd.generative import generative_perplexity, quality_vs_steps
from reasoning_lib.sedd.graph import Absorbing
from reasoning_lib.sedd.likelihood import elbo, real_tokens
from reasoning_lib.sedd.model import DDiTConfig, SEDD
from reasoning_lib.sedd.noise import LogLinearNoise
from reasoning_lib.sedd.sampling import sample

LENGTH = 24


@pytest.fixture(scope="module")
def tok():
    return sedd_data.build_review_tokenizer()


def random_sedd(num_states, length=LENGTH, seed=0):
    torch.manual_seed(seed)
    model = SEDD(DDiTConfig(vocab_size=num_states, hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, length=length,
                            dropout=0.0))
    for p in model.parameters():  # away from the zero-initialised identity, so the bound depends on the weights
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def setup(tok):
    states = len(tok) + 1
    return random_sedd(states), Absorbing(states), LogLinearNoise()


# ---- which positions are tokens ----------------------------------------------------------------------------

def test_real_tokens_count_the_review_and_its_first_eos_not_the_padding(tok):
    rows = sedd_data.review_canvases(tok, 50, LENGTH, seed=0)
    eos = tok.eos_token_id
    counted = real_tokens(rows, eos)
    first_eos = (rows == eos).int().argmax(-1)  # reviews hold no eos: the first one ends the review
    assert torch.equal(counted.sum(-1), first_eos + 1)
    assert (counted.sum(-1) < LENGTH).all() and 0.6 < counted.float().mean() < 0.85  # ~30% of positions are padding
    for i, row in enumerate(rows):
        assert counted[i, : first_eos[i] + 1].all() and not counted[i, first_eos[i] + 1:].any()
    made = torch.tensor([[5, 6, 0, 0, 0], [5, 0, 6, 7, 0], [5, 0, 6, 7, 8], [0, 0, 0, 0, 0]])
    assert real_tokens(made, 0).tolist() == [[True, True, True, False, False],  # review, end, padding
                                             [True] * 5,  # packed: eos between documents and one at the end
                                             [True] * 5,  # packed, no trailing eos
                                             [True, False, False, False, False]]  # an empty review: its end counts
    with pytest.raises(ValueError, match=r"\[M, n\]"):
        real_tokens(made[0], 0)


def test_per_token_bound_divides_the_whole_canvas_bound_by_the_real_tokens(tok, setup):
    model, graph, noise = setup
    rows = sedd_data.review_canvases(tok, 40, LENGTH, seed=1)
    counted = real_tokens(rows, tok.eos_token_id)
    before = elbo(model, graph, noise, rows, num_times=4, seed=0)
    after = elbo(model, graph, noise, rows, num_times=4, seed=0, count_mask=counted)
    assert after.total_nats == before.total_nats  # the padding's loss stays in the numerator
    assert after.num_tokens == int(counted.sum()) < before.num_tokens == rows.numel() == after.num_positions
    assert after.nats_per_token == pytest.approx(after.total_nats / int(counted.sum()), rel=1e-12)
    assert after.nats_per_token > 1.2 * before.nats_per_token and after.perplexity > before.perplexity
    assert after.nats_per_position == pytest.approx(before.nats_per_token)
    assert after.num_sequences == 40 and len(after.sequence_nats) == 40
    assert sum(after.sequence_nats) == pytest.approx(after.total_nats)
    fixed = torch.zeros_like(counted)
    fixed[:, :3] = True  # fixed positions are neither scored nor counted, whatever the count mask says
    both = elbo(model, graph, noise, rows, fixed, num_times=4, count_mask=counted)
    assert both.num_tokens == int((counted & ~fixed).sum()) and both.num_positions == rows.numel() - 120
    with pytest.raises(ValueError, match="count_mask must be a bool tensor"):
        elbo(model, graph, noise, rows, count_mask=counted.long())
    with pytest.raises(ValueError, match="count_mask must be a bool tensor"):
        elbo(model, graph, noise, rows, count_mask=counted[:, :5])


# ---- its standard error ------------------------------------------------------------------------------------

def test_standard_error_is_over_sequences_and_shrinks_with_sequences_and_times(tok, setup):
    model, graph, noise = setup
    rows = sedd_data.review_canvases(tok, 256, LENGTH, seed=2)
    plain = elbo(model, graph, noise, rows[:64], num_times=2)
    per_sequence = torch.tensor(plain.sequence_nats, dtype=torch.float64)  # every row counts all 24 positions: SE = std / sqrt(M) / 24
    assert plain.stderr_nats_per_token == pytest.approx(float(per_sequence.std() / 8 / LENGTH), rel=1e-9)
    counted = real_tokens(rows, tok.eos_token_id)
    se = {(m, k): elbo(model, graph, noise, rows[:m], num_times=k, count_mask=counted[:m]).stderr_nats_per_token
          for m, k in ((16, 1), (16, 32), (256, 1))}
    assert se[16, 32] < 0.6 * se[16, 1]  # time-sampling noise is part of it
    assert se[256, 1] < 0.4 * se[16, 1]  # ~1/sqrt(M)
    one = elbo(model, graph, noise, rows[:1], num_times=2)
    assert math.isnan(one.stderr_nats_per_token) and all(math.isnan(v) for v in one.perplexity_interval())
    low, high = plain.perplexity_interval(z=1.0)
    assert low < plain.perplexity < high
    assert math.log(high) - math.log(low) == pytest.approx(2 * plain.stderr_nats_per_token)


def test_intervals_from_few_samples_cover_a_high_sample_estimate(tok, setup):
    model, graph, noise = setup
    rows = sedd_data.review_canvases(tok, 512, LENGTH, seed=100)
    truth = elbo(model, graph, noise, rows, num_times=16, count_mask=real_tokens(rows, tok.eos_token_id), seed=9)
    covered = 0
    for seed in range(10):  # independent small estimates: new reviews, new times
        small = sedd_data.review_canvases(tok, 32, LENGTH, seed=200 + seed)
        est = elbo(model, graph, noise, small, num_times=2, count_mask=real_tokens(small, tok.eos_token_id), seed=seed)
        assert est.stderr_nats_per_token > 3 * truth.stderr_nats_per_token
        low, high = est.perplexity_interval()
        covered += low <= truth.perplexity <= high
    assert covered >= 8  # nominal 95%


# ---- the EMA bound against training steps ------------------------------------------------------------------

def _online_and_ema(checkpoint_dir, model):
    """Two models with the checkpoint's online and EMA weights, read by hand from the SEDDWithEMA state dict."""
    state = load_file(str(checkpoint_dir / "model.safetensors"))
    online = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    ema = dict(online)
    for name in ema:
        key = "ema.shadow__" + name.replace(".", "__")
        if key in state:
            ema[name] = state[key]
    models = []
    for weights in (online, ema):
        m = SEDD(model.config)
        m.load_state_dict(weights)
        models.append(m.eval())
    return models


def test_the_bound_against_steps_evaluates_the_ema_not_the_online_weights(tmp_path, tok):
    states = len(tok) + 1
    rows = sedd_data.review_canvases(tok, 300, LENGTH, seed=0)
    train_rows, held_out = rows[:256], rows[256:]
    counted = real_tokens(held_out, tok.eos_token_id)
    config = training.get_config("smoke", max_steps=20, length=LENGTH)
    model, _ = training.train_sedd(config, train_rows, states, tmp_path / "curve", seed=0, device="cpu",
                                   validate_sequences=held_out, validate_every=8, validate_count_mask=counted)
    plain, _ = training.train_sedd(config, train_rows, states, tmp_path / "plain", seed=0, device="cpu")
    for (name, p), q in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), name  # evaluating during training draws nothing from the training RNG
    curve = read_elbo_curve(tmp_path / "curve")
    assert [r["step"] for r in curve] == [8, 16, 20]  # every 8 steps, and the last
    assert not (tmp_path / "plain" / CURVE_FILE).exists()
    graph, noise = Absorbing(states), LogLinearNoise()
    # the checkpoint run keeps only its last checkpoint here (checkpoint_every >= 50 > 20 steps)
    rows_vs_steps = elbo_vs_steps(tmp_path / "curve", graph, noise, held_out, counted, num_times=8)
    assert [r["step"] for r in rows_vs_steps] == [20]
    online, ema = _online_and_ema(tmp_path / "curve" / "checkpoints" / "step-000020", model)
    ema_bound = elbo(ema, graph, noise, held_out, num_times=8, count_mask=counted)
    online_bound = elbo(online, graph, noise, held_out, num_times=8, count_mask=counted)
    assert rows_vs_steps[0]["nats_per_token"] == pytest.approx(ema_bound.nats_per_token, rel=1e-6)
    assert curve[-1]["nats_per_token"] == pytest.approx(ema_bound.nats_per_token, rel=1e-6)
    assert rows_vs_steps[0]["stderr"] == pytest.approx(ema_bound.stderr_nats_per_token, rel=1e-6)
    assert rows_vs_steps[0]["perplexity"] == pytest.approx(math.exp(ema_bound.nats_per_token), rel=1e-6)
    assert abs(online_bound.nats_per_token - ema_bound.nats_per_token) > 0.05  # they differ after 20 steps
    returned = elbo(model, graph, noise, held_out, num_times=8, count_mask=counted)  # train_sedd returns the EMA
    assert returned.nats_per_token == pytest.approx(ema_bound.nats_per_token, rel=1e-6)
    loaded = load_ema_weights(tmp_path / "curve" / "checkpoints" / "step-000020", SEDD(model.config))
    for p, q in zip(loaded.parameters(), ema.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(FileNotFoundError, match="without validate_sequences"):
        read_elbo_curve(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="no step-NNNNNN"):
        elbo_vs_steps(tmp_path / "none", graph, noise, held_out)


def test_the_curve_drops_rows_a_resumed_run_writes_again(tmp_path, tok, setup):
    from reasoning_lib.sedd.evaluation import EmaElboCurve
    from reasoning_lib.sedd.training import SEDDWithEMA

    model, graph, noise = setup
    held_out = sedd_data.review_canvases(tok, 8, LENGTH, seed=3)
    container = SEDDWithEMA(SEDD(model.config), 0.9)
    curve = EmaElboCurve(tmp_path, graph, noise, held_out, every=2, num_times=2)
    assert curve(1, container) is None
    for step in (2, 4, 6):
        curve(step, container)
    curve(4, container)  # resumed from a checkpoint at step 3
    assert [json.loads(line)["step"] for line in (tmp_path / CURVE_FILE).read_text().splitlines()] == [2, 4]
    assert container.model.training  # left in the mode it was found in


# ---- sample quality ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def causal_lm_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    folder = tmp_path_factory.mktemp("causal_lm")
    lm.save_pretrained(folder)
    return folder


def test_generative_perplexity_is_the_mean_over_samples_of_exp_mean_nll(causal_lm_folder):
    from transformers import GPT2LMHeadModel

    samples = torch.randint(50, (7, 12), generator=torch.Generator().manual_seed(0))
    result = generative_perplexity(samples, str(causal_lm_folder), batch_size=3)  # loaded by path, as by hub id
    lm = GPT2LMHeadModel.from_pretrained(causal_lm_folder).eval()
    with torch.no_grad():
        logp = lm(input_ids=samples).logits.log_softmax(-1)
    nll = -logp[:, :-1].gather(-1, samples[:, 1:, None])[..., 0]  # token i+1 given tokens 0..i
    by_hand = nll.mean(-1).exp()
    assert result.per_sample == pytest.approx(by_hand.tolist(), rel=1e-5)
    assert result.perplexity == pytest.approx(float(by_hand.mean()), rel=1e-5)
    assert result.stderr == pytest.approx(float(by_hand.std() / math.sqrt(7)), rel=1e-4)
    assert result.pooled_perplexity == pytest.approx(float(nll.mean().exp()), rel=1e-5)
    assert result.num_samples == 7 and result.tokens_scored == 7 * 11
    assert result.interval()[0] < result.perplexity < result.interval()[1]
    assert generative_perplexity(samples, lm, batch_size=7).per_sample == pytest.approx(result.per_sample, rel=1e-5)


def test_generative_perplexity_refuses_another_vocabulary(causal_lm_folder):
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel.from_pretrained(causal_lm_folder)
    samples = torch.randint(50, (4, 12))
    samples[2, 5] = 50  # the absorbing graph's mask state, one past the tokens
    with pytest.raises(ValueError, match=r"span \[\d+, 50\] but the causal LM's vocabulary is \[0, 50\).*mask state"):
        generative_perplexity(samples, lm)
    with pytest.raises(ValueError, match="samples' vocabulary has 43 tokens but the causal LM's has 50"):
        generative_perplexity(torch.randint(43, (4, 12)), lm, vocab_size=43)
    with pytest.raises(ValueError, match="exceed the causal LM's 32 positions"):
        generative_perplexity(torch.randint(50, (2, 40)), lm)
    with pytest.raises(FileNotFoundError, match="could not load the causal LM"):
        generative_perplexity(samples, str(causal_lm_folder / "absent"))


def test_quality_vs_steps_is_keyed_by_network_evaluations(setup):
    model, graph, noise = setup
    seen = []

    def measure(tokens):
        seen.append(tuple(tokens.shape))
        return float((tokens == 0).float().mean())

    quality = quality_vs_steps(model, graph, noise, [1, 3], num_samples=5, length=LENGTH, measure=measure, seed=4)
    assert set(quality) == {"euler", "analytic"} and all(set(q) == {2, 4} for q in quality.values())
    assert seen == [(5, LENGTH)] * 4
    direct = sample(model, graph, noise, 5, LENGTH, 3, "analytic", generator=torch.Generator().manual_seed(4))
    assert quality["analytic"][4] == measure(direct.tokens)
    batched = quality_vs_steps(model, graph, noise, [2], ("analytic",), num_samples=5, measure=measure, batch_size=2)
    assert list(batched) == ["analytic"] and list(batched["analytic"]) == [3] and seen[-1] == (5, LENGTH)
