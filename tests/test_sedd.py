"""SEDD maths: schedules, graphs, score entropy, samplers and likelihood (Lou et al. 2024, §3-4): the properties
each must have, checked against closed forms and matrix exponentials on small vocabularies."""
import math

import pytest
import torch

from reasoning_lib.sedd.graph import Absorbing, Uniform, build_graph, sample_categorical
from reasoning_lib.sedd.noise import GeometricNoise, LogLinearNoise, build_noise

N = 6


def rate_matrix(graph) -> torch.Tensor:
    """Q with Q[:, i] = rates out of state i, rebuilt from transp_rate (rows)."""
    return torch.stack([graph.transp_rate(torch.tensor([i]))[0] for i in range(graph.num_states)])


@pytest.mark.parametrize("noise", [LogLinearNoise(), GeometricNoise(1e-4, 20.0)])
def test_rate_is_the_derivative_of_total_noise(noise):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (noise.total(t + h) - noise.total(t - h)) / (2 * h)
    torch.testing.assert_close(noise.rate(t), numeric, rtol=1e-5, atol=1e-6)


def test_loglinear_masks_a_fraction_t_and_ends_at_log_1000():
    noise = LogLinearNoise()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(-torch.expm1(-noise.total(t)), (1 - 1e-3) * t)
    assert math.isclose(float(noise.total(torch.tensor(1.0, dtype=torch.float64))), math.log(1000), rel_tol=1e-9)
    assert isinstance(build_noise({"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20}), GeometricNoise)
    with pytest.raises(ValueError, match="noise type"):
        build_noise({"type": "cosine"})


@pytest.mark.parametrize("graph", [Absorbing(N), Uniform(N)], ids=["absorb", "uniform"])
def test_transitions_match_the_matrix_exponential(graph):
    q = rate_matrix(graph).double()
    assert torch.allclose(q.sum(dim=0), torch.zeros(N, dtype=torch.float64), atol=1e-6)  # columns of Q sum to 0
    x = torch.arange(N)
    for sigma in (0.1, 0.7, 2.5):
        expm = torch.matrix_exp(sigma * q)
        sig = torch.full((N,), sigma)
        torch.testing.assert_close(graph.transp_transition(x, sig).double(), expm, atol=1e-6, rtol=1e-5)  # rows
        torch.testing.assert_close(graph.transition(x, sig).double(), expm.T, atol=1e-6, rtol=1e-5)  # columns
        torch.testing.assert_close(graph.transition(x, sig).sum(-1), torch.ones(N))  # each x_t | x_0 sums to 1
        score = torch.rand(N, N, dtype=torch.float64) + 0.1
        want = (torch.matrix_exp(-sigma * q) @ score.T).T
        torch.testing.assert_close(graph.staggered_score(score.float(), sig).double(), want, atol=1e-5, rtol=1e-5)


def test_graph_builder_and_bad_input():
    assert build_graph("absorb", 5).mask == 4
    with pytest.raises(ValueError, match="graph type"):
        build_graph("gaussian", 5)
    with pytest.raises(ValueError, match="num_states"):
        Uniform(1)


@pytest.mark.parametrize("graph", [Absorbing(N), Uniform(N)], ids=["absorb", "uniform"])
def test_analytic_step_probabilities_sum_to_one(graph):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(N, (50,), generator=gen)
    score = torch.rand(50, N, generator=gen) * 3
    score = score.scatter(-1, x[:, None], 1.0)  # s_{x_t} = 1, as the parametrisation guarantees
    dsigma = torch.rand(50, generator=gen)
    probs = graph.staggered_score(score, dsigma) * graph.transp_transition(x, dsigma)
    torch.testing.assert_close(probs.sum(-1), torch.ones(50), atol=1e-5, rtol=1e-5)


def test_absorbing_unmask_probability_under_the_exact_score_is_t_minus_s_over_t():
    graph, noise = Absorbing(N), LogLinearNoise()
    posterior = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15, 0.0])  # p(x0 | .) over real tokens
    for t, s in ((0.9, 0.6), (0.5, 0.45), (0.2, 0.05)):
        sigma_t, sigma_s = noise.total(torch.tensor([t])), noise.total(torch.tensor([s]))
        score = posterior / torch.expm1(sigma_t)
        score[graph.mask] = 1.0
        x = torch.tensor([graph.mask])
        probs = graph.staggered_score(score[None], sigma_t - sigma_s) * graph.transp_transition(x, sigma_t - sigma_s)
        assert math.isclose(1 - float(probs[0, graph.mask]), (t - s) / t, rel_tol=1e-4)
        torch.testing.assert_close(probs[0, :graph.mask] / probs[0, :graph.mask].sum(), posterior[:graph.mask])
    unmasked = graph.staggered_score(torch.rand(1, N), torch.tensor([0.3])) * graph.transp_transition(torch.tensor([2]), torch.tensor([0.3]))
    assert unmasked[0].argmax() == 2 and (unmasked[0, torch.arange(N) != 2] == 0).all()  # stays put


def test_forward_corruption_rates_and_fixed_positions():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(N - 1, (400, 50), generator=gen)
    sigma = torch.full((400, 1), 0.8)
    fixed = torch.zeros_like(x0, dtype=torch.bool)
    fixed[:, :10] = True
    for graph, expected in ((Absorbing(N), 1 - math.exp(-0.8)), (Uniform(N), (1 - math.exp(-0.8)) * (N - 1) / N)):
        x_t = graph.sample_transition(x0, sigma, fixed, generator=gen)
        assert torch.equal(x_t[:, :10], x0[:, :10])
        rate = float((x_t[:, 10:] != x0[:, 10:]).float().mean())
        assert abs(rate - expected) < 0.01, (type(graph).__name__, rate, expected)


def test_score_entropy_is_nonnegative_and_zero_at_the_true_ratio():
    gen = torch.Generator().manual_seed(0)
    for graph in (Absorbing(N), Uniform(N)):
        x0 = torch.randint(N - 1, (200,), generator=gen)
        sigma = torch.rand(200, generator=gen) * 3 + 0.01
        x_t = graph.sample_transition(x0, sigma, generator=gen)
        log_s = torch.randn(200, N, generator=gen)
        assert (graph.score_entropy(log_s, sigma, x_t, x0) >= -1e-5).all()
    uniform = Uniform(N)  # exact ratio a_y = p(y | x0) / p(x_t | x0) gives zero loss, for x_t == x0 and x_t != x0
    for x_t_val, x0_val in ((2, 2), (2, 4)):
        x_t, x0, sigma = torch.tensor([x_t_val]), torch.tensor([x0_val]), torch.tensor([0.6])
        column = uniform.transition(x0, sigma)[0]
        log_a = torch.log(column / column[x_t_val])
        assert abs(float(uniform.score_entropy(log_a[None], sigma, x_t, x0))) < 1e-5
    absorb = Absorbing(N)
    sigma = torch.tensor([0.6])
    assert float(absorb.score_entropy(torch.randn(1, N), sigma, torch.tensor([3]), torch.tensor([3]))) == 0.0
    grid = torch.linspace(-4, 2, 601)  # masked: the loss in s_{x0} is minimal at -log(e^sigma - 1)
    log_s = torch.full((601, N), -30.0)
    log_s[:, 1] = grid
    losses = absorb.score_entropy(log_s, sigma.expand(601), torch.full((601,), absorb.mask), torch.full((601,), 1))
    assert abs(float(grid[losses.argmin()]) + math.log(math.expm1(0.6))) < 0.011


def test_denoising_loss_is_minimised_by_the_true_marginal_ratio():
    # brute force on a 4-state uniform graph: E_{x0 ~ p} E_{x_t | x0} loss(s(x_t)) is minimal at s = p_t(y) / p_t(x_t)
    graph, sigma = Uniform(4), torch.tensor([0.5])
    p0 = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kernel = graph.transition(torch.arange(4), sigma.expand(4))  # [x0, x_t]
    p_t = p0 @ kernel

    def expected_loss(log_scores):  # log_scores[x_t] is a vector over y
        total = 0.0
        for x0 in range(4):
            for x_t in range(4):
                weight = p0[x0] * kernel[x0, x_t]
                total += weight * graph.score_entropy(log_scores[x_t][None], sigma, torch.tensor([x_t]), torch.tensor([x0]))
        return float(total)

    best = torch.log(p_t[None, :] / p_t[:, None])
    base = expected_loss(best)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert expected_loss(best + 0.3 * torch.randn(4, 4, generator=gen)) > base


def test_categorical_sampler_follows_unnormalised_probabilities_and_skips_nonpositive():
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([2.0, 6.0, 0.0, -1.0]).expand(20_000, 4)
    draws = sample_categorical(probs, gen)
    assert not ((draws == 2) | (draws == 3)).any()
    assert abs(float((draws == 1).float().mean()) - 0.75) < 0.015


# ---- loss, samplers, likelihood, training: on a small random DDiT -------------------------------------------

from reasoning_lib.sedd import data as sedd_data  # noqa: E402
from reasoning_lib.sedd import training  # noqa: E402
from reasoning_lib.sedd.likelihood import elbo  # noqa: E402
from reasoning_lib.sedd.losses import dwdse_loss  # noqa: E402
from reasoning_lib.sedd.model import DDiTConfig, SEDD  # noqa: E402
from reasoning_lib.sedd.sampling import sample  # noqa: E402


def small_model(num_states=N, length=12, scale_by_sigma=True, seed=0):
    torch.manual_seed(seed)
    model = SEDD(DDiTConfig(vocab_size=num_states, hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, length=length,
                            dropout=0.0, scale_by_sigma=scale_by_sigma))
    for p in model.parameters():  # leave the zero-initialised identity: a random network gives informative checks
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def test_fixed_positions_are_never_noised_and_cost_nothing():
    graph, noise, model = Absorbing(N), LogLinearNoise(), small_model()
    x0 = torch.randint(N - 1, (8, 12))
    fixed = torch.zeros_like(x0, dtype=torch.bool)
    fixed[:, :5] = True
    t = torch.full((8,), 0.99)
    torch.manual_seed(0)
    with_fixed = dwdse_loss(model, graph, noise, x0, fixed, t=t)
    # the same corruption but everything free: the free positions' share is identical
    x0_all_fixed = dwdse_loss(model, graph, noise, x0, torch.ones_like(fixed), t=t)
    assert torch.equal(x0_all_fixed, torch.zeros(8))
    assert (with_fixed > 0).all()
    uniform_model = small_model(scale_by_sigma=False)
    assert torch.equal(dwdse_loss(uniform_model, Uniform(N), noise, x0, torch.ones_like(fixed), t=t), torch.zeros(8))


@pytest.mark.parametrize("predictor", ["euler", "analytic"])
def test_samplers_count_evaluations_keep_projections_and_end_unmasked(predictor):
    graph, noise, model = Absorbing(N), LogLinearNoise(), small_model()
    fixed_mask = torch.zeros(4, 12, dtype=torch.bool)
    fixed_mask[:, :3] = True  # a prefix
    fixed_mask[:, -2:] = True  # a suffix
    fixed_mask[1, 6] = True  # an arbitrary position
    fixed_ids = torch.randint(N - 1, (4, 12))
    seen = []
    out = sample(model, graph, noise, 4, 12, steps=7, predictor=predictor, fixed_ids=fixed_ids, fixed_mask=fixed_mask,
                 record_chain=True, callback=lambda step, t, x: seen.append((step, t)),
                 generator=torch.Generator().manual_seed(0))
    assert out.nfe == 8 and len(out.chain) == 9 and [s for s, _ in seen] == list(range(9))
    assert out.times[0] == 1.0 and out.times[-1] == 0.0 and out.times == sorted(out.times, reverse=True)
    for state in out.chain:
        assert torch.equal(state[fixed_mask], fixed_ids[fixed_mask])
    assert not (out.tokens == graph.mask).any()
    assert (out.chain[0][~fixed_mask] == graph.mask).all()  # starts from the limit: all masks
    masked = [int((s == graph.mask).sum()) for s in out.chain]
    assert masked == sorted(masked, reverse=True)  # absorbing: a token once revealed stays


def test_sampler_runs_for_the_uniform_graph_and_rejects_bad_arguments():
    graph, noise, model = Uniform(N), GeometricNoise(1e-4, 20.0), small_model(scale_by_sigma=False)
    out = sample(model, graph, noise, 3, 12, steps=5, predictor="euler", generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (3, 12) and out.nfe == 6
    with pytest.raises(ValueError, match="predictor"):
        sample(model, graph, noise, 3, 12, steps=5, predictor="ddim")
    with pytest.raises(ValueError, match="steps"):
        sample(model, graph, noise, 3, 12, steps=0)


def test_elbo_is_finite_reproducible_and_skips_fixed_positions():
    graph, noise, model = Absorbing(N), LogLinearNoise(), small_model()
    seqs = torch.randint(N - 1, (10, 12))
    a, b = elbo(model, graph, noise, seqs, num_times=4, seed=3), elbo(model, graph, noise, seqs, num_times=4, seed=3)
    assert a.total_nats == b.total_nats and a.num_tokens == 120 and math.isfinite(a.perplexity) and a.perplexity > 1
    fixed = torch.zeros_like(seqs, dtype=torch.bool)
    fixed[:, :6] = True
    assert elbo(model, graph, noise, seqs, fixed, num_times=4).num_tokens == 60
    with pytest.raises(ValueError, match="non-empty"):
        elbo(model, graph, noise, torch.zeros(0, 12, dtype=torch.long))


def test_review_canvases_and_the_well_formed_check():
    tok = sedd_data.build_review_tokenizer()
    rows = sedd_data.review_canvases(tok, 20, 24, seed=0)
    assert rows.shape == (20, 24) and sedd_data.well_formed_fraction(tok, rows) == 1.0
    broken = rows.clone()
    broken[:, 1] = tok.eos_token_id
    assert sedd_data.well_formed_fraction(tok, broken) == 0.0
    assert sedd_data.decode(tok, [len(tok)])[0] == sedd_data.MASK_TEXT
    with pytest.raises(ValueError, match="too short"):
        sedd_data.review_canvases(tok, 5, 8, seed=0)


@pytest.mark.slow
def test_training_lowers_the_loss_and_resumes_model_and_ema(tmp_path):
    tok = sedd_data.build_review_tokenizer()
    seqs = sedd_data.review_canvases(tok, 512, 24, seed=0)
    config = training.get_config("smoke", max_steps=60, batch_size=32, n_blocks=2, hidden_size=64, n_heads=4)
    states = len(tok) + 1
    model, history = training.train_sedd(config, seqs, states, tmp_path / "full", seed=0, device="cpu")
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    # stop at 30 steps, then resume to 60: the same weights (EMA included) as the uninterrupted run
    half = training.get_config("smoke", max_steps=30, batch_size=32, n_blocks=2, hidden_size=64, n_heads=4)
    training.train_sedd(half, seqs, states, tmp_path / "resumed", seed=0, device="cpu")
    resumed, _ = training.train_sedd(config, seqs, states, tmp_path / "resumed", seed=0, device="cpu")
    for (name, p), (_, q) in zip(model.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(p, q, msg=name)
    again, logged = training.train_sedd(config, seqs, states, tmp_path / "full", seed=0, device="cpu")
    assert logged == history  # a finished run is reloaded with its log
    with pytest.raises(ValueError, match="states"):
        training.train_sedd(config, seqs, 10, tmp_path / "bad", seed=0, device="cpu")


def test_euler_and_analytic_coincide_for_absorbing_loglinear_but_not_uniform():
    # exp(sigma_bar(t) - sigma_bar(t - dt)) - 1 == sigma(t) dt exactly for the log-linear schedule
    model = small_model()
    kwargs = dict(batch_size=6, length=12, steps=5)
    runs = [sample(model, Absorbing(N), LogLinearNoise(), predictor=p, generator=torch.Generator().manual_seed(1), **kwargs)
            for p in ("euler", "analytic")]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    uniform_model = small_model(scale_by_sigma=False)
    runs = [sample(uniform_model, Uniform(N), GeometricNoise(1e-4, 20.0), predictor=p, record_chain=True,
                   generator=torch.Generator().manual_seed(1), **kwargs) for p in ("euler", "analytic")]
    assert any(not torch.equal(a, b) for a, b in zip(runs[0].chain, runs[1].chain))


def test_build_random_takes_only_the_config_of_a_checkpoint(tmp_path):
    """The paper dry run's stand-in for sedd-small: the checkpoint's shapes, fresh weights, no weights read."""
    from reasoning_lib.sedd.loading import build_random, save_model

    torch.manual_seed(0)
    saved = SEDD(DDiTConfig(vocab_size=40, hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, length=12))
    save_model(saved, tmp_path / "ckpt", "absorb", {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20.0})
    (tmp_path / "ckpt" / "model.safetensors").unlink()  # only config.json is needed
    fresh = build_random(tmp_path / "ckpt")
    assert fresh.config == saved.config
    assert not torch.equal(fresh.vocab_embed.embedding, saved.vocab_embed.embedding)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_random(tmp_path)
