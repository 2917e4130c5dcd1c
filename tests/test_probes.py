"""Linear probes (reasoning_lib.probes): decodability, baselines, feature collection under padding, heat-map."""
import json
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from reasoning_lib.probes import (
    LabelSpace, ProbeConfig, ProbeGrid, ProbeMemoryError, collect_hidden_states, fit_probes, model_cross_entropy,
    probe_heatmap, probe_memory, run_probes, token_groups_from_spans,
)


def planted(num_rows=800, num_classes=4, dim=8, seed=0, class_probs=None):
    """Gaussian features (N, 2, 2, D) where only cell (1, 1) carries a fixed direction per class."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.tensor(class_probs) if class_probs else torch.full((num_classes,), 1.0 / num_classes)
    classes = torch.multinomial(probs, num_rows, replacement=True, generator=g)  # (N,)
    x = torch.randn(num_rows, 2, 2, dim, generator=g)
    directions = 4 * torch.randn(len(probs), dim, generator=g)
    x[:, 1, 1] += directions[classes]
    return x, classes


def test_planted_feature_is_decoded_perfectly_and_only_where_planted():
    x, classes = planted()
    labels = 1000 + 17 * classes  # arbitrary label ids, e.g. token ids
    grids = run_probes(x, labels, ProbeConfig(eval_fraction=0.25))
    held = grids["held-out"]
    assert held.accuracy.shape == (2, 2) and held.layer_names == ["embeddings", "layer 1"]
    assert held.accuracy[1, 1] == 1.0, f"planted cell should be decoded perfectly, got {held.accuracy[1, 1]}"
    assert held.cross_entropy[1, 1] < 0.05
    noise = held.accuracy.flatten()[:3]
    assert noise.max() < 0.45, f"cells without the feature should sit near chance (0.25), got {noise}"


def test_shuffled_labels_give_the_baselines():
    x, classes = planted(num_rows=2000, num_classes=3, dim=4, seed=1, class_probs=[0.5, 0.3, 0.2])
    shuffled = classes[torch.randperm(len(classes), generator=torch.Generator().manual_seed(2))]
    held = run_probes(x, shuffled, ProbeConfig(eval_fraction=0.3))["held-out"]
    assert 0.40 < held.baseline_accuracy < 0.60  # the majority class has p = 0.5
    gap_acc = (held.accuracy - held.baseline_accuracy).abs().max()
    gap_ce = (held.cross_entropy - held.baseline_cross_entropy).abs().max()
    assert gap_acc < 0.06, f"probe on noise should match the majority baseline, off by {gap_acc:.3f}"
    assert gap_ce < 0.05, f"probe CE on noise should match the marginal CE, off by {gap_ce:.3f} nats"


def test_baselines_use_train_labels_with_add_one_smoothing():
    space = LabelSpace.fit(torch.tensor([5, 5, 5, 9, 9, 9, 2]), num_classes=4)  # tie 5/9: the smaller id wins
    accuracy, ce = space.baselines(torch.tensor([5, 9, 7, 7]))  # 7 never seen in training
    n, k = 7, 4
    assert accuracy == pytest.approx(1 / 4)
    expected = -(math.log(4 / (n + k)) + math.log(4 / (n + k)) + 2 * math.log(1 / (n + k))) / 4
    assert ce == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="num_classes"):
        LabelSpace.fit(torch.tensor([1, 2]), num_classes=2).baselines(torch.tensor([3]))


def test_unseen_held_out_labels_count_as_wrong_with_finite_ce():
    x, classes = planted(num_rows=600, num_classes=4, seed=3)
    train, held = torch.arange(400), torch.arange(400, 600)
    keep = train[classes[train] != 3]  # class 3 only appears in the held-out rows
    probes = fit_probes(x[keep], classes[keep], ProbeConfig(num_classes=4))
    grid = probes.evaluate(x[held], classes[held])
    unseen = (classes[held] == 3).double().mean().item()
    assert 0 < unseen < 0.5
    assert grid.accuracy[1, 1] == pytest.approx(1 - unseen), "unseen labels must be wrong, seen ones right"
    expected_ce = unseen * math.log(len(keep) + 4)  # seen rows cost ~0 nats, unseen 1/(n + K) each
    assert math.isfinite(grid.cross_entropy[1, 1]) and grid.cross_entropy[1, 1] == pytest.approx(expected_ce, abs=0.05)


def test_fit_is_deterministic_and_results_serialise():
    x, classes = planted(num_rows=300, seed=4)
    config = ProbeConfig(max_iter=50, eval_fraction=0.2)
    first, second = run_probes(x, classes, config), run_probes(x, classes, config)
    assert torch.equal(first["held-out"].cross_entropy, second["held-out"].cross_entropy)
    one_cell_at_a_time = run_probes(x, classes, ProbeConfig(max_iter=50, eval_fraction=0.2, cells_per_fit=1))
    assert torch.equal(one_cell_at_a_time["held-out"].accuracy, first["held-out"].accuracy)
    data = json.loads(json.dumps(first["held-out"].to_dict()))
    back = ProbeGrid.from_dict(data)
    assert torch.allclose(back.accuracy, first["held-out"].accuracy) and back.position_names == ["0", "1"]


def test_config_and_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="cv_folds"):
        ProbeConfig(cv_folds=1)
    with pytest.raises(ValueError, match="penalties"):
        ProbeConfig(penalties=(-1.0,))
    probes = fit_probes(*planted(num_rows=100), ProbeConfig(penalties=(1e-3,), max_iter=10))
    with pytest.raises(ValueError, match=r"\(100, 3, 2, 8\)"):
        probes.log_probs(torch.zeros(100, 3, 2, 8))


# ---------------------------------------------------------------------- memory bounded by construction
def allocator_peak(fn):
    """(result, peak live bytes, largest allocation) of ``fn()``, from torch's own CPU allocator accounting."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    kineto = getattr(prof.profiler, "kineto_results", None)
    if kineto is None:
        pytest.skip("this torch's profiler does not expose its allocation events")
    events = sorted((e.start_ns(), e.nbytes()) for e in kineto.events() if e.name() == "[memory]")
    live = peak = largest = 0
    for _, nbytes in events:  # + allocation, - free, of blocks allocated while profiling
        live += nbytes
        peak, largest = max(peak, live), max(largest, nbytes)
    return result, peak, largest


@pytest.mark.parametrize("penalties, num_rows", [((1e-3,), 4000),
                                                 pytest.param((1e-3, 1e-1), 2000, marks=pytest.mark.slow)])
def test_probe_memory_stays_under_the_cap_where_full_logits_would_not(penalties, num_rows):
    num_classes, cap = 1000, 5e5
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(0))
    classes = (torch.arange(num_rows) % num_classes)[order]
    x = torch.randn(num_rows, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    assert 4 * num_rows * num_classes > 15 * cap  # one cell's float32 (N, C) logits: 8 or 16 MB
    config = ProbeConfig(penalties=penalties, max_iter=3, history_size=2, memory_bytes=cap, eval_fraction=0.1)
    grids, peak, largest = allocator_peak(lambda: run_probes(x, classes, config))
    train_rows = int(0.9 * num_rows)
    train_classes = len(torch.unique(classes[:train_rows]))
    estimate = probe_memory(num_rows, 2, train_classes, 1, num_positions=2, num_penalties=len(penalties),
                            eval_fraction=0.1, memory_bytes=cap, history_size=2, max_iter=3)
    assert estimate.refit.class_chunk < train_classes and estimate.refit.row_batch < train_rows  # both were cut
    assert estimate.working <= cap
    # the estimate bounds what the allocator saw (the fitted probes are the output, kept on the host)
    assert peak <= estimate.working + estimate.probes, (peak, estimate)
    assert largest < cap / 2, f"a {largest / 1e6:.1f} MB tensor: the logits were not chunked"
    assert grids["held-out"].accuracy.shape == (1, 2) and grids["train"].num_examples == train_rows


def plain_probe(x, y, penalty, max_iter):
    """The unchunked fit of one cell: standardised x (N, D), full (N, C) logits through autograd."""
    mean, std = x.mean(0), x.std(0, unbiased=False)
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    bias = torch.zeros(weight.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight + bias, y) + penalty * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda rows: ((rows - mean) / std) @ weight.detach() + bias.detach()


def test_streamed_chunked_probes_equal_the_unchunked_fit():
    x, classes = planted(num_rows=400, num_classes=6, dim=5, seed=7)
    train, held = slice(0, 300), slice(300, 400)
    plain_accuracy, plain_ce = torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    for s in range(2):
        for p in range(2):
            logits = plain_probe(x[train, s, p], classes[train], 1e-2, 200)(x[held, s, p])
            plain_accuracy[s, p] = (logits.argmax(1) == classes[held]).double().mean()
            plain_ce[s, p] = torch.nn.functional.cross_entropy(logits, classes[held]).double()
    assert plain_accuracy[1, 1] > 0.9 and plain_accuracy.flatten()[:3].max() < 0.6  # only the planted cell
    for cut in ({}, {"row_batch": 37, "class_chunk": 4}, {"row_batch": 300, "class_chunk": 1}):
        config = ProbeConfig(penalties=(1e-2,), max_iter=200, cells_per_fit=1, **cut)
        grid = fit_probes(x[train], classes[train], config).evaluate(x[held], classes[held], **cut)
        assert torch.equal(grid.accuracy, plain_accuracy), (cut, grid.accuracy, plain_accuracy)
        torch.testing.assert_close(grid.cross_entropy, plain_ce, atol=2e-4, rtol=0)


def test_probe_memory_at_paper_scale_is_bounded_and_too_small_a_cap_is_named():
    # 100k rows, 5 hidden states x 4 token groups of width 448, the ~20k-class answer, 4 candidate penalties
    memory = probe_memory(100_000, 448, 20_000, 5, num_positions=4, num_penalties=4)
    assert memory.working <= ProbeConfig().memory_bytes
    cv_rows = 95_000 - 95_000 // 3
    assert 4 * 4 * cv_rows * 20_000 > memory.working  # a cell's logits under 4 penalties at once: 20 GB
    assert memory.cv.problems() == 1 and memory.cv.class_chunk == 20_000 and memory.cv.resident
    assert memory.features == 4 * 100_000 * 20 * 448 and memory.probes == 4 * 20 * 449 * 20_000
    with pytest.raises(ProbeMemoryError, match=r"history_size=100 .* raise memory_bytes or lower history_size"):
        probe_memory(100_000, 448, 20_000, 5, num_positions=4, memory_bytes=4e9)
    assert probe_memory(100_000, 448, 20_000, 5, num_positions=4, memory_bytes=4e9, history_size=40).working <= 4e9
    x, classes = planted(num_rows=100)
    with pytest.raises(ProbeMemoryError, match="memory_bytes=1000"):
        fit_probes(x, classes, ProbeConfig(penalties=(1e-3,), memory_bytes=1e3))
    with pytest.raises(ValueError, match="row_batch=0"):
        ProbeConfig(row_batch=0)


def tiny_models():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=50,
                                         max_position_embeddings=64))
    return {"gpt2": gpt2, "llama": llama}


MODELS = tiny_models()
SEQUENCES = [[3, 4, 5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17], [18, 19, 20, 21]]
GROUPS = {"subject": [[0, 1], [0], [1, 2], [0, 1, 2]], "relation": [[2], [1], [3], [3]], "last": [[-1]] * 4,
          "pair": [[0, -1]] * 4}
POOL = {"subject": "mean", "relation": "mean", "last": "last", "pair": "concat"}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_reads_the_same_states_as_each_example_alone(arch, padding_side):
    model = MODELS[arch]
    batched = collect_hidden_states(model, SEQUENCES, GROUPS, pool=POOL, batch_size=4, padding_side=padding_side)
    # (N, L+1, P, 2H): 'pair' concatenates two tokens, the narrower groups are zero-padded
    assert batched.shape == (4, 3, 4, 64)
    alone = collect_hidden_states(model, SEQUENCES, GROUPS, pool=POOL, batch_size=1)
    assert torch.allclose(batched, alone, atol=1e-5), f"{padding_side} padding changed the states: padding leaked in"
    assert (batched[:, :, :3, 32:] == 0).all()
    assert model.training, "collect_hidden_states must restore the model's training mode"
    model.eval()  # collection runs in eval mode (GPT-2 has dropout); so must the direct forward
    run = model(torch.tensor([SEQUENCES[2]]), output_hidden_states=True).hidden_states
    model.train()
    assert torch.allclose(batched[2, 2, 0, :32], run[2][0, 1:3].mean(0), atol=1e-5)  # subject = mean of tokens 1, 2
    assert torch.allclose(batched[2, 1, 3], torch.cat([run[1][0, 0], run[1][0, -1]]), atol=1e-5)


def test_plain_positions_layers_and_custom_forward():
    model = MODELS["gpt2"]
    features = collect_hidden_states(model, SEQUENCES, [0, -1], layers=[0, 2], padding_side="left")
    assert features.shape == (4, 2, 2, 32)
    def embeddings_only(m, ids, mask, position_ids):  # a non-HF model plugs in the same way
        return (m.transformer.wte(ids),)

    embed_only = collect_hidden_states(model, SEQUENCES, [0], forward=embeddings_only)
    assert torch.allclose(embed_only[:, 0, 0], model.transformer.wte.weight[[s[0] for s in SEQUENCES]])


def test_position_outside_an_example_raises():
    with pytest.raises(ValueError, match="outside example 1"):
        collect_hidden_states(MODELS["gpt2"], SEQUENCES, [3])
    with pytest.raises(ValueError, match="outside example 1"):
        collect_hidden_states(MODELS["gpt2"], SEQUENCES, [-4])
    with pytest.raises(ValueError, match="3 index lists but there are 4"):
        collect_hidden_states(MODELS["gpt2"], SEQUENCES, {"subject": [[0]] * 3})
    with pytest.raises(ValueError, match="3 hidden states"):
        collect_hidden_states(MODELS["gpt2"], SEQUENCES, [0], layers=[3])
    with pytest.raises(ValueError, match="sizes"):
        collect_hidden_states(MODELS["gpt2"], SEQUENCES, {"subject": GROUPS["subject"]}, pool="concat")


def test_model_cross_entropy_matches_a_direct_forward():
    model = MODELS["llama"]
    targets = [s[-1] for s in SEQUENCES]
    ce = model_cross_entropy(model, SEQUENCES, positions=[-2] * 4, targets=targets, padding_side="left")
    direct = [torch.nn.functional.cross_entropy(model(torch.tensor([s])).logits[0, -2], torch.tensor(s[-1])).item()
              for s in SEQUENCES]
    assert ce == pytest.approx(sum(direct) / 4, abs=1e-5)


def test_token_groups_from_spans():
    offsets = [(0, 4), (4, 8), (8, 13), (13, 15), (15, 22), (0, 0)]  # "What was Alice's parent"; (0, 0) = special
    assert token_groups_from_spans(offsets, {"name": (9, 13), "relation": (16, 22)}) == {"name": [2], "relation": [4]}


def test_heatmap_has_one_trace_and_one_button_per_target_and_split():
    x, classes = planted(num_rows=200, seed=5)
    grids = run_probes(x, classes, ProbeConfig(penalties=(1e-3,), max_iter=30, eval_fraction=0.25))
    fig = probe_heatmap({"bridge entity": grids, "answer": grids})
    buttons = fig.layout.updatemenus[0].buttons
    assert len(fig.data) == 4 and len(buttons) == 4
    assert [trace.visible for trace in fig.data] == [True, False, False, False]
    for i, button in enumerate(buttons):
        assert button.args[0]["visible"] == [j == i for j in range(4)]
    assert "CE" in fig.data[0].hovertemplate and fig.data[0].customdata.shape == (2, 2, 3)


def test_probe_line_names_the_best_cell_and_words_the_comparisons():
    from reasoning_lib.probes.grid import ProbeGrid
    from reasoning_lib.probes.report import best_cell, probe_line

    def grid(best):
        accuracy = torch.tensor([[0.1, 0.11], [0.1, best]])
        return ProbeGrid(accuracy, torch.ones(2, 2), 0.1, 1.0, ["embeddings", "layer 1"], ["first", "last"],
                         num_examples=200)

    assert best_cell(grid(0.9)) == (pytest.approx(0.9), "layer 1, last token")
    line = probe_line("Bridge", grid(0.9), grid(0.35))
    assert "at layer 1, last token" in line and "best vs majority class: apart" in line
    assert "trained vs untrained: apart" in line
    assert probe_line("Bridge", grid(0.12)).endswith("best vs majority class: not distinguishable at this test size.")
