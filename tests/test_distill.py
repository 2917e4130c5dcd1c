"""Causal distillation (DIITO, Wu et al. 2022): interchange interventions (identity swap, locality, full swap),
the losses, the task and the runs."""
import random
import re

import pytest
import torch

from reasoning_lib import distill as D
from reasoning_lib.data import reviews
from reasoning_lib.distill.intervention import Sites, model_inputs


@pytest.fixture(scope="module")
def tokenizer():
    return D.build_word_tokenizer()


@pytest.fixture(scope="module")
def teacher(tokenizer):
    torch.manual_seed(0)
    return D.build_teacher(4, tokenizer, dropout=0.0).eval()


@pytest.fixture(scope="module")
def batch(tokenizer):
    sample = reviews.make_reviews(6, seed=1)
    return D.collate(D.encode(tokenizer, [r.text for r in sample], [r.label for r in sample]))


def hidden_states(model, inputs):
    """HF's hidden_states: [embeddings, block 0 output, block 1 output, ...]."""
    return model(**model_inputs(inputs), output_hidden_states=True).hidden_states


def test_hidden_states_and_recording_see_the_intervention(teacher, batch):
    # transformers records hidden_states with hooks installed at the first forward: ours must run first
    source = {k: v.roll(1, dims=0) for k, v in batch.items()}
    sites = D.sample_sites(D.eligible(batch), D.eligible(source), prop=0.3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden_states(teacher, batch)
        with D.interchanged(teacher, D.source_values(teacher, source, [2], sites), sites):
            with D.recording(teacher, [2]) as store:
                states = hidden_states(teacher, batch)
    assert torch.equal(states[3], store[2])


def test_identity_intervention_changes_nothing(teacher, batch):
    sites = D.sample_sites(D.eligible(batch), D.eligible(batch), prop=0.5, generator=torch.Generator().manual_seed(0))
    sites = Sites(sites.base, sites.base.clone(), sites.valid)  # same positions in the same input
    with torch.no_grad():
        plain = teacher(**model_inputs(batch)).logits
        values = D.source_values(teacher, batch, [1, 2], sites)
        with D.interchanged(teacher, values, sites):
            states = hidden_states(teacher, batch)
        counterfactual = D.counterfactual_logits(teacher, batch, batch, [1, 2], sites)
    assert torch.equal(counterfactual, plain)
    for got, want in zip(states, hidden_states(teacher, batch)):
        assert torch.equal(got, want)


def test_intervention_is_local_to_its_block_and_positions(teacher, batch):
    source = {k: v.roll(1, dims=0) for k, v in batch.items()}
    sites = D.sample_sites(D.eligible(batch), D.eligible(source), prop=0.3, generator=torch.Generator().manual_seed(1))
    layer = 2
    with torch.no_grad():
        before = hidden_states(teacher, batch)
        with D.interchanged(teacher, D.source_values(teacher, source, [layer], sites), sites):
            after = hidden_states(teacher, batch)
    for block in range(layer):  # hidden_states[b + 1] is the output of block b
        assert torch.equal(after[block + 1], before[block + 1])
    touched = torch.zeros(batch["input_ids"].shape, dtype=torch.bool)
    rows = torch.arange(len(touched)).unsqueeze(1).expand_as(sites.base)
    touched[rows[sites.valid], sites.base[sites.valid]] = True
    assert torch.equal(after[layer + 1][~touched], before[layer + 1][~touched])
    assert not torch.equal(after[layer + 1][touched], before[layer + 1][touched])
    assert not torch.equal(after[-1], before[-1])  # downstream blocks see the change


def test_swapping_every_position_reproduces_the_source_run(teacher, tokenizer):
    # equal lengths and masks: after a full swap at block l, everything downstream is the source's
    texts = ["the plot was good and the cast is bad and the music felt fun",
             "the story is dull but the ending was great and the camera felt weak"]
    base = D.collate(D.encode(tokenizer, texts[:1], [1]))
    source = D.collate(D.encode(tokenizer, texts[1:], [0]))
    assert base["input_ids"].shape == source["input_ids"].shape
    sites = D.all_sites(base["attention_mask"])
    with torch.no_grad():
        with D.interchanged(teacher, D.source_values(teacher, source, [1], sites), sites):
            swapped = hidden_states(teacher, base)
            swapped_logits = teacher(**model_inputs(base)).logits
        reference = hidden_states(teacher, source)
    for block in range(1, len(D.encoder_layers(teacher))):
        torch.testing.assert_close(swapped[block + 1], reference[block + 1])
    torch.testing.assert_close(swapped_logits, teacher(**model_inputs(source)).logits)


def test_site_sampler_counts_and_bounds():
    base_mask = torch.tensor([[1] * 10 + [0] * 6, [1] * 16, [1] * 3 + [0] * 13]).bool()
    source_mask = torch.tensor([[1] * 16, [1] * 7 + [0] * 9, [1] * 16]).bool()
    gen = torch.Generator().manual_seed(0)
    for consecutive in (False, True):
        sites = D.sample_sites(base_mask, source_mask, prop=0.3, consecutive=consecutive, generator=gen)
        assert sites.counts().tolist() == [3, 2, 0]  # floor(0.3 * min(len_b, len_s))
        for row in range(3):
            b, s = sites.base[row][sites.valid[row]], sites.source[row][sites.valid[row]]
            assert base_mask[row, b].all() and source_mask[row, s].all()
            assert len(set(b.tolist())) == len(b)
            if consecutive and len(b) > 1:
                assert (b.diff() == 1).all() and (s.diff() == 1).all()
    with pytest.raises(ValueError, match="prop"):
        D.sample_sites(base_mask, source_mask, prop=1.5)


def test_random_sites_pair_the_kth_base_position_with_the_kth_source_position():
    # Wu et al. 2022 match P_b and P_s in order; a random order on each side would be a random bijection
    full = torch.ones(3, 12, dtype=torch.bool)
    for seed in range(5):
        everything = D.sample_sites(full, full, prop=1.0, generator=torch.Generator().manual_seed(seed))
        assert everything.base.tolist() == [list(range(12))] * 3, "prop 1 must pair every position with itself"
        assert torch.equal(everything.base, everything.source)
    base_mask = torch.tensor([[1] * 16, [1] * 9 + [0] * 7]).bool()
    source_mask = torch.tensor([[1] * 11 + [0] * 5, [1] * 16]).bool()
    for seed in range(20):
        sites = D.sample_sites(base_mask, source_mask, prop=0.5, generator=torch.Generator().manual_seed(seed))
        assert sites.counts().tolist() == [5, 4]
        for row in range(2):
            b, s = sites.base[row][sites.valid[row]], sites.source[row][sites.valid[row]]
            assert (b.diff() > 0).all() and (s.diff() > 0).all(), (seed, row, b.tolist(), s.tolist())


def test_special_tokens_can_be_kept_out_of_sites(tokenizer, batch):
    specials = [tokenizer.cls_token_id, tokenizer.sep_token_id]
    mask = D.eligible(batch, specials)
    assert not mask[:, 0].any()  # [CLS]
    assert mask.sum() == batch["attention_mask"].sum() - 2 * len(mask)


def test_layer_mapping_and_student_initialisation(teacher):
    assert D.layer_mapping("full", 12, 6) == {j: [2 * j, 2 * j + 1] for j in range(6)}
    assert D.layer_mapping("0:1;1:3", 4, 2) == {0: [1], 1: [3]}
    with pytest.raises(ValueError, match="divisible"):
        D.layer_mapping("full", 4, 3)
    with pytest.raises(ValueError, match="outside"):
        D.layer_mapping({0: [7]}, 4, 2)
    student = D.build_student(teacher, [0, 2])
    assert len(D.encoder_layers(student)) == 2
    for j, t in enumerate([0, 2]):
        for (name, p), (_, q) in zip(D.encoder_layers(student)[j].named_parameters(),
                                     D.encoder_layers(teacher)[t].named_parameters()):
            assert torch.equal(p, q), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="block indices"):
        D.build_student(teacher, [0, 9])


def test_soft_kl_is_a_batchmean_kl():
    for classes in (2, 5):
        t, s = torch.randn(8, classes), torch.randn(8, classes)
        p, q = (t / 3).softmax(-1), (s / 3).softmax(-1)
        manual = 9 * (p * (p.log() - q.log())).sum(-1).mean()
        torch.testing.assert_close(D.soft_kl(t, s, 3.0), manual)
        assert D.soft_kl(t, s, 3.0) > 0
        assert D.soft_kl(t, t.clone(), 3.0).abs() < 1e-6


def test_derangement_has_no_fixed_point():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 17):
        for _ in range(20):
            perm = D.derangement(n, gen)
            assert sorted(perm.tolist()) == list(range(n)) and (perm != torch.arange(n)).all()


def test_counterfactual_loss_is_zero_for_a_model_against_itself(teacher, batch):
    objective = D.DistillObjective(teacher, {j: [j] for j in range(4)}, beta=1.0)
    random.seed(0)
    assert objective.counterfactual_loss(teacher, batch).abs() < 1e-6


def test_gradients_reach_the_student_through_both_runs_and_never_the_teacher(teacher, batch):
    student = D.build_student(teacher, [0, 2]).train()
    source = {k: v.roll(1, dims=0) for k, v in batch.items()}
    sites = D.sample_sites(D.eligible(batch), D.eligible(source), 0.3, generator=torch.Generator().manual_seed(0))
    values = D.source_values(student, source, [1], sites)
    values[1].retain_grad()
    with D.interchanged(student, values, sites):
        student(**model_inputs(batch)).logits.sum().backward()
    assert values[1].grad.abs().sum() > 0  # into the swapped-in source activations

    student.zero_grad()
    objective = D.DistillObjective(teacher, D.layer_mapping("full", 4, 2), beta=1.0)
    objective(student, batch).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in student.named_parameters() if "layer.0" in n)


def parse_label(text: str) -> int:
    """Recompute a review's label from its words alone (an independent reading of the task's rule)."""
    votes = 0
    for clause in re.split(r" (?:and|but|while|yet) ", text):
        words = clause.split()
        sign = 1 if words[-1] in reviews.POSITIVE else -1
        votes += -sign if "not" in words else sign
    return int(votes > 0)


def test_generated_task_follows_its_causal_rule(tokenizer):
    train, test = reviews.make_splits(400, 100, seed=3)
    assert not {r.text for r in train} & {r.text for r in test}
    assert all(parse_label(r.text) == r.label for r in train + test)
    assert 0.3 < sum(r.label for r in train) / len(train) < 0.7
    assert reviews.make_reviews(50, 3) == train[:50]  # reproducible
    ids = D.encode(tokenizer, [train[0].text], [train[0].label])[0]["input_ids"]
    assert tokenizer.unk_token_id not in ids and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_bad_inputs_fail_with_clear_errors(tokenizer, teacher):
    with pytest.raises(ValueError, match="class indices"):
        D.encode(tokenizer, ["the plot was good"], [-1])
    with pytest.raises(ValueError, match="task"):
        D.get_config("tiny", task="imdb")
    with pytest.raises(ValueError, match="exceed"):
        D.get_config("tiny", train_sizes=(500, 20_000))
    with pytest.raises(FileNotFoundError, match="GLUE"):
        D.load_glue("sst2", tokenizer)  # HF_DATASETS_OFFLINE=1 in the test environment
    with pytest.raises(ValueError, match="asked for"):
        D.subset([{"label": 0}] * 3, 5, seed=0)


def test_a_three_label_teacher_and_student_reload_on_a_rerun(tmp_path):
    # an MNLI-like run: the second call finds the finished runs and reloads them (it used to rebuild 2 labels)
    config = D.get_config("smoke", train_sizes=(24,), min_student_steps=1, batch_size=8)
    tokenizer = D.build_word_tokenizer()
    sample = reviews.make_reviews(24, seed=3)
    train_set = D.encode(tokenizer, [r.text for r in sample], [i % 3 for i in range(24)])
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        teacher, _ = D.train_teacher(config, tokenizer, train_set, tmp_path / "teacher", seed=0, device="cpu")
        student, _ = D.distill("kd", teacher, train_set, config, tokenizer, tmp_path / "kd", 0, "cpu", size=24)
        runs.append((teacher.eval(), student.eval()))
    inputs = model_inputs(D.collate(train_set[:4]))
    for first, again in zip(*runs):
        assert again.config.num_labels == 3
        torch.testing.assert_close(again(**inputs).logits, first(**inputs).logits)


@pytest.mark.slow
def test_teacher_learns_the_task_and_students_distil_it(tmp_path):
    # 750 teacher steps (4 epochs of 10,000 stalled on one CPU type; 8 epochs of 3,000 did not)
    config = D.get_config("tiny", num_train=3000, num_test=300, student_epochs=2, teacher_epochs=8,
                          train_sizes=(1000,), min_student_steps=60, eval_pairs=200)
    torch.manual_seed(0)
    tokenizer, train, test = D.prepare_data(config, seed=0)
    teacher, history = D.train_teacher(config, tokenizer, train, tmp_path / "teacher", seed=0, device="cpu")
    assert history[-1]["loss"] < history[0]["loss"] / 3
    assert D.accuracy(teacher, test) > 0.9
    student, history = D.distill("diito", teacher, train, config, tokenizer, tmp_path / "diito", 0, "cpu", size=1000)
    assert sum(h["loss"] for h in history[-3:]) / 3 < history[0]["loss"]  # a 60-step log is noisy: average its end
    again, logged = D.distill("diito", teacher, train, config, tokenizer, tmp_path / "diito", 0, "cpu", size=1000)
    assert logged == history and torch.equal(D.predict(again, test), D.predict(student, test))  # reloaded, not retrained
