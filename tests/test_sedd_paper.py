"""SEDD against the paper (Lou, Meng & Ermon 2024): score entropy only where it is defined, and sample quality
judged with the tokenizer's own end-of-text (GPT-2's ``<|endoftext|>``, the book's ``<eos>``)."""
import torch

from hub_layout import EOT, gpt2_tokenizer
from reasoning_lib.data import reviews
from reasoning_lib.sedd import data as sedd_data
from reasoning_lib.sedd.graph import Absorbing, Uniform
from reasoning_lib.sedd.losses import dwdse_loss
from reasoning_lib.sedd.model import SEDD, DDiTConfig
from reasoning_lib.sedd.noise import LogLinearNoise

N = 7  # 6 real tokens + the mask (id 6) for the absorbing graph


def paper_score_entropy(graph, log_score, sigma, x_t, x0):
    """Denoising score entropy of one position from its definition (paper §3), in float64, state by state:
    sum_{y != x_t} w_y [exp(s_y) - a_y s_y + K(a_y)], with w_y the rate from x_t to y (row x_t of Q),
    a_y = p_sigma(y | x0) / p_sigma(x_t | x0) and K(a) = a (log a - 1), K(0) = 0."""
    out = torch.zeros(x_t.shape, dtype=torch.float64)
    for i in range(x_t.numel()):
        xt, x_0, s = int(x_t[i]), int(x0[i]), log_score[i].double()
        weights = graph.transp_rate(x_t[i:i + 1])[0].double()
        column = graph.transition(x0[i:i + 1], sigma[i:i + 1])[0].double()  # p_sigma(. | x0)
        total = torch.zeros((), dtype=torch.float64)
        for y in range(graph.num_states):
            if y == xt or weights[y] == 0:
                continue
            a = column[y] / column[xt]
            k = a * (torch.log(a) - 1) if a > 0 else torch.zeros((), dtype=torch.float64)
            total += weights[y] * (s[y].exp() - a * s[y] + k)
        out[i] = total
    return out


def where_score_entropy(graph, log_score, sigma, x_t, x0):
    """The absorbing formula as it was computed before: exp at every position, unmasked ones discarded after."""
    log_score = log_score.float()
    masked = x_t == graph.mask
    sigma = sigma.float()
    esigm1 = torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1).expand_as(x_t)
    ratio = 1 / esigm1
    positive = log_score[..., : graph.mask].exp().sum(-1)
    negative = ratio * log_score.gather(-1, x0[..., None])[..., 0]
    return torch.where(masked, positive - negative + ratio * (torch.log(ratio) - 1), torch.zeros_like(positive))


def random_positions(graph, count, seed):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randint(N - 1, (count,), generator=gen)
    sigma = torch.rand(count, generator=gen) * 4 + 0.01  # both branches of the expm1 switch at 0.5
    x_t = graph.sample_transition(x0, sigma, generator=gen)
    log_score = torch.randn(count, N, generator=gen) * 2
    log_score = log_score.scatter(-1, x_t[:, None], 0.0)  # the network pins log s_{x_t} = 0
    return log_score, sigma, x_t, x0


def test_absorbing_score_entropy_matches_the_paper_formula_masked_or_not():
    graph = Absorbing(N)
    log_score, sigma, x_t, x0 = random_positions(graph, 300, seed=0)
    masked = x_t == graph.mask
    assert 50 < int(masked.sum()) < 250  # both kinds of position are exercised
    ours = graph.score_entropy(log_score, sigma, x_t, x0)
    assert ours.shape == x_t.shape and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), paper_score_entropy(graph, log_score, sigma, x_t, x0), rtol=1e-5, atol=1e-5)
    assert (ours[~masked] == 0).all()


def test_uniform_score_entropy_matches_the_paper_formula():
    graph = Uniform(N)
    log_score, sigma, x_t, x0 = random_positions(graph, 200, seed=1)
    assert (x_t != x0).any() and (x_t == x0).any()
    ours = graph.score_entropy(log_score, sigma, x_t, x0)
    torch.testing.assert_close(ours.double(), paper_score_entropy(graph, log_score, sigma, x_t, x0), rtol=1e-5, atol=1e-5)


def test_a_huge_log_score_at_an_unmasked_position_leaves_loss_and_gradient_finite():
    graph = Absorbing(N)
    x0 = torch.tensor([[1, 2, 3, 4]])
    x_t = torch.tensor([[1, graph.mask, 3, graph.mask]])  # positions 0 and 2 are unmasked
    sigma = torch.tensor([[0.7]])
    log_score = torch.randn(1, 4, N, generator=torch.Generator().manual_seed(0))
    log_score[0, 0, 5] = 1000.0  # exp overflows fp32 here, but this position's loss is zero by definition
    log_score.requires_grad_(True)
    loss = graph.score_entropy(log_score, sigma, x_t, x0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(log_score.grad).all()
    assert (loss[0, [0, 2]] == 0).all() and (log_score.grad[0, [0, 2]] == 0).all()
    # the masked positions are untouched by the outlier: same values and gradient as without it
    clean = log_score.detach().clone()
    clean[0, 0, 5] = 0.0
    clean.requires_grad_(True)
    reference = graph.score_entropy(clean, sigma, x_t, x0)
    reference.sum().backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(log_score.grad, clean.grad)


def test_a_huge_log_score_at_the_current_token_of_the_uniform_graph_is_ignored():
    # y = x_t is outside the sum; its entry must not leak into the loss as inf * 0
    graph = Uniform(N)
    x0, x_t, sigma = torch.tensor([2, 4]), torch.tensor([2, 1]), torch.tensor([0.3, 1.5])
    log_score = torch.randn(2, N, generator=torch.Generator().manual_seed(0))
    clean = log_score.scatter(-1, x_t[:, None], 0.0).requires_grad_(True)
    spiked = log_score.scatter(-1, x_t[:, None], 1000.0).requires_grad_(True)
    values = [graph.score_entropy(s, sigma, x_t, x0) for s in (clean, spiked)]
    for v, s in zip(values, (clean, spiked)):
        v.sum().backward()
    torch.testing.assert_close(values[1], values[0])
    torch.testing.assert_close(spiked.grad, clean.grad)


def test_masked_only_loss_equals_the_exp_everywhere_loss_on_a_training_batch():
    torch.manual_seed(0)
    model = SEDD(DDiTConfig(vocab_size=N, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, length=16))
    model.eval()  # no dropout: both losses must see the same scores
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.5)  # non-trivial scores (the head starts at zero)
    graph, noise = Absorbing(N), LogLinearNoise()
    x0 = torch.randint(N - 1, (8, 16), generator=torch.Generator().manual_seed(1))

    class WhereAbsorbing(Absorbing):
        score_entropy = where_score_entropy

    old, new = (dwdse_loss(model, g, noise, x0, generator=torch.Generator().manual_seed(2))
                for g in (WhereAbsorbing(N), graph))
    assert torch.isfinite(new).all() and (new > 0).all()
    torch.testing.assert_close(new, old, rtol=1e-6, atol=0)


def _review_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_well_formed_uses_gpt2s_end_of_text():
    tok = gpt2_tokenizer()
    assert tok.eos_token == EOT
    review = reviews.make_reviews(1, seed=0)[0].text
    ids = _review_ids(tok, review)
    assert sedd_data.is_well_formed(tok, ids + [tok.eos_token_id] * 3)
    assert sedd_data.is_well_formed(tok, _review_ids(tok, review + EOT + EOT))  # end-of-text written in the text
    assert not sedd_data.is_well_formed(tok, ids)  # no end-of-text at all
    assert not sedd_data.is_well_formed(tok, _review_ids(tok, review + " <eos>"))  # another tokenizer's end-of-text
    assert not sedd_data.is_well_formed(tok, ids + [tok.eos_token_id] + ids[:2])  # text after end-of-text
    assert not sedd_data.is_well_formed(tok, ids[:-1] + [len(tok)] + [tok.eos_token_id])  # a mask left in
    rows = torch.tensor([ids + [tok.eos_token_id] * 2, [tok.eos_token_id] + ids + [tok.eos_token_id]])
    assert sedd_data.well_formed_fraction(tok, rows) == 0.5


def test_well_formed_with_the_books_review_tokenizer():
    tok = sedd_data.build_review_tokenizer()
    review = reviews.make_reviews(1, seed=3)[0].text
    ids = _review_ids(tok, review)
    assert sedd_data.is_well_formed(tok, ids + [tok.eos_token_id] * 2)
    assert sedd_data.is_well_formed(tok, torch.tensor(ids + [tok.eos_token_id]))
    assert not sedd_data.is_well_formed(tok, ids)
    assert not sedd_data.is_well_formed(tok, ids[:-1] + [len(tok), tok.eos_token_id])
    assert not sedd_data.is_well_formed(tok, ids + [tok.eos_token_id, ids[0]])


def test_the_review_tokenizers_verdicts_are_unchanged_on_noisy_rows():
    """Chapter 3's quality numbers: the id-based check agrees with the former token-string one (``<eos>``)."""
    tok = sedd_data.build_review_tokenizer()
    rows = sedd_data.review_canvases(tok, 200, 24, seed=5)
    gen = torch.Generator().manual_seed(0)
    swap = torch.rand(rows.shape, generator=gen) < 0.03  # a few wrong words, stray end-of-text, masks
    rows = torch.where(swap, torch.randint(len(tok) + 1, rows.shape, generator=gen), rows)

    def by_token_strings(ids):
        tokens = sedd_data.decode(tok, ids)
        if "<eos>" not in tokens:
            return False
        cut = tokens.index("<eos>")
        return all(t == "<eos>" for t in tokens[cut:]) and reviews.parse_review(" ".join(tokens[:cut])) is not None

    verdicts = [sedd_data.is_well_formed(tok, row) for row in rows]
    assert 20 < sum(verdicts) < 180  # both outcomes occur
    assert verdicts == [by_token_strings(row) for row in rows]
