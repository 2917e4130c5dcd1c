"""Capacity sweep over worlds, the reported capacity schemes, convergence over a fixed window, the training stream."""
import json
import math

import numpy as np
import pytest
import torch

from reasoning_lib.capacity import (ProfileConfig, QAEncoder, QuestionSampler, TwoHopSplit, build_qa_tokenizer,
                                    entropy_budget, generate_profiles, questions_to_text, synthetic_pools)
from reasoning_lib.capacity.entropy import LAW_BITS_PER_PARAM, capacity_from_losses
from reasoning_lib.capacity.presets import (PRESETS, SWEEPS, CapacitySweep, get_config, get_multihop_config,
                                            get_sweep)
from reasoning_lib.capacity.report import (REPORTED, capacity_budgets, capacity_eval_steps, capacity_rows, find_row,
                                           is_converged, two_hop_subject_questions, window_convergence)
from reasoning_lib.capacity.stream import QAStream, pack_whole, read_stream_log
from reasoning_lib.capacity.sweep import (capacity_bound_points, collect_worlds, planned_parameters, run_worlds,
                                          sweep_points, world_dir)
from reasoning_lib.capacity.training import prepare_world, read_capacity_log, train_size
from reasoning_lib.runtime import DistributedContext
from reasoning_lib.train import BatchSampler


@pytest.fixture(scope="module")
def world():
    """A small r4 world: (profiles, encoder, split)."""
    profiles = generate_profiles(ProfileConfig(200, 4), synthetic_pools(), np.random.default_rng(0))
    tokenizer = build_qa_tokenizer(profiles, vocab_size=400, num_texts=3000)
    return profiles, QAEncoder(profiles, tokenizer), TwoHopSplit.build(profiles.relations, np.random.default_rng(1))


# ---------------------------------------------------------------- 1. the paper sweep binds every size

def test_every_size_of_the_paper_sweep_is_capacity_bound_on_at_least_two_worlds():
    sweep = get_sweep("paper")
    assert sweep.num_relations == (4, 17) and min(sweep.num_people) == 10_000 and max(sweep.num_people) == 30_000
    assert sweep.base.selection == "enumerate" and sweep.base.scheme == "optimal", "the reference's 1_hop_scaling"
    bound = capacity_bound_points(sweep)
    assert list(bound) == [sweep.base.size_label(s) for s in range(len(sweep.base.model_sizes))]
    for size, points in bound.items():
        assert len({n for n, _ in points}) >= 2, f"{size} is capacity-bound on {points} only"
    # the bound holds under the reference's observed-support entropy too (it is ≈0.66·N·R bits lower)
    observed = CapacitySweep(get_config("paper", support="observed"), sweep.num_people, sweep.num_relations)
    assert all(len({n for n, _ in p}) >= 2 for p in capacity_bound_points(observed).values())
    # the former budgets 5M and 10M (7.7M and 15.5M real parameters) hold every world of N <= 30k
    old = CapacitySweep(get_config("paper", model_sizes=(5_000_000, 10_000_000)), sweep.num_people, sweep.num_relations)
    assert capacity_bound_points(old) == {"P5000000-L4": [], "P10000000-L4": []}


def test_sweep_points_compare_the_world_entropy_with_two_bits_per_parameter():
    rows = sweep_points(get_sweep("paper", num_people=10_000, num_relations=17))
    assert [r["num_parameters"] for r in rows] == [435_888, 890_320, 1_475_824, 2_192_400, 3_040_048]
    for row in rows:
        assert row["law_bits"] == LAW_BITS_PER_PARAM * row["num_parameters"]
        assert row["capacity_bound"] == (row["required_bits"] > row["law_bits"])
        gap = row["required_bits_by_support"]["generating"] - row["required_bits_by_support"]["observed"]
        assert 0.5 * 10_000 * 17 < gap < 0.8 * 10_000 * 17, "observed support sits ≈0.66·N·R bits lower"
    assert 2.85e6 < rows[0]["required_bits"] < 3.0e6  # E₁ of N = 10k, r17 with enumerated names
    assert [r["capacity_bound"] for r in rows] == [True, True, False, False, False]


def test_sweep_worlds_are_named_and_refused_by_name():
    sweep = SWEEPS["paper"]
    assert len(sweep.worlds) == 10 and len(sweep.runs) == 50 and sweep.worlds[0] == (10_000, 4)
    assert sweep.world_label(9) == "N30000-r17" and sweep.world_index("N15000-r4") == 1
    config = sweep.world_config("N25000-r17")
    assert (config.num_people, config.num_relations, config.model_sizes) == (25_000, 17, sweep.base.model_sizes)
    with pytest.raises(ValueError, match=r"world='N1-r4' is not one of this sweep's 10 worlds"):
        sweep.world_index("N1-r4")
    with pytest.raises(ValueError, match="num_relations"):
        CapacitySweep(PRESETS["tiny"], (1000,), (5,))
    with pytest.raises(ValueError, match="distinct positive"):
        CapacitySweep(PRESETS["tiny"], (1000, 1000), (4,))
    one = get_sweep("paper", num_people=20_000, num_relations=4, max_steps=5000)
    assert one.worlds == ((20_000, 4),) and one.base.max_steps == 5000
    assert world_dir(one, 0, "out").as_posix() == "out" and world_dir(sweep, 9, "out").as_posix() == "out/N30000-r17"
    assert planned_parameters(get_config("tiny"), 0) == 27_472


def test_sweep_entropy_is_that_of_the_trained_world(tmp_path):
    sweep = get_sweep("smoke", num_people=(40, 60))
    points = sweep_points(sweep)
    for w in range(2):
        config = sweep.world_config(w)
        profiles = prepare_world(config, world_dir(sweep, w, tmp_path), seed=0).profiles
        budget = entropy_budget(profiles, config.scheme, config.selection, config.support)
        assert points[2 * w]["required_bits"] == pytest.approx(budget.dataset_bits(1))
    assert (tmp_path / "N40-r4").is_dir() and (tmp_path / "N60-r4").is_dir()


# ---------------------------------------------------------------- 3. every reported scheme, at checkpoints

def test_capacity_rows_cover_every_reported_scheme_and_both_conventions(world):
    profiles, _, split = world
    budgets = capacity_budgets(profiles, "enumerate")
    one = {s: 0.0 for s in profiles.subjects}
    two = {s: 0.0 for i, s in enumerate(profiles.subjects) if not split.second_attributes[i]}
    rows = capacity_rows(budgets, one, two, num_parameters=1000)
    assert len(rows) == 2 * len(REPORTED) and {r["support"] for r in rows} == {"generating", "observed"}
    for row in rows:  # at zero loss every rule credits the whole dataset
        assert row["capacity_bits"] == pytest.approx(row["dataset_bits"]) and row["selection"] == "enumerate"
    big = find_row(rows, 2, "2-hop-big-hash", "subjectwise", "observed")
    held = budgets[("2-hop-big-hash", "observed")].restricted(two)
    assert big["dataset_bits"] == pytest.approx(held.dataset_bits(2)) and len(held.subject_bits) == len(two)
    assert find_row(rows, 1, "optimal", "subjectwise", "generating")["dataset_bits"] == pytest.approx(
        budgets[("optimal", "generating")].dataset_bits(1))
    # 2.1-hop = the 2-hop capacity + the incremental (no selection credit, clipped at 0) 1-hop capacity
    lossy_one = {s: 0.5 * h for s, h in budgets[("optimal", "generating")].subject_bits.items()}
    lossy = capacity_rows(budgets, lossy_one, two)
    two_hop = find_row(lossy, 2, "2-hop-double", "subjectwise", "generating")["capacity_bits"]
    incremental = capacity_from_losses(budgets[("2-hop-double", "generating")].restricted(two), lossy_one,
                                       incremental=True).total_bits
    assert find_row(lossy, 2.1, "2-hop-double", "subjectwise", "generating")["capacity_bits"] == pytest.approx(
        two_hop + incremental)
    assert not any(r["hops"] != 1 for r in capacity_rows(budgets, one)), "no 2-hop rows without 2-hop losses"
    with pytest.raises(KeyError, match="no capacity row"):
        find_row(rows, 3, "optimal", "subjectwise", "generating")


def test_two_hop_questions_per_subject_skip_the_held_out_attribute(world):
    profiles, _, split = world
    q = two_hop_subject_questions(split, 25, np.random.default_rng(0))
    counts = np.bincount(q.subject, minlength=len(profiles.subjects))
    assert np.array_equal(counts, np.where(split.second_attributes, 0, 25))
    assert (split.category(q.person, q.relation, q.subject) == 0).all(), "2-hop training questions only"


def test_capacity_is_evaluated_on_the_reference_schedule():
    assert capacity_eval_steps(10_000_000, 100_000)[:10] == [100, 215, 464, 1000, 2154, 4642, 10000, 21544,
                                                            46416, 100000]
    steps = capacity_eval_steps(10_000_000, 100_000)
    assert steps[-1] == 10_000_000 and len(steps) == 10 + 99 and steps[10] == 200_000
    assert capacity_eval_steps(30, 10) == [10, 20, 30] and capacity_eval_steps(25, None) == [25]
    assert capacity_eval_steps(35, 10) == [10, 20, 30, 35]


def test_convergence_reads_a_fixed_window_of_steps():
    three = [{"step": s, "loss": 1.0} for s in (1, 2, 3)]
    assert not is_converged(three, window=10, tolerance=0.05), "a 3-step run is shorter than the window"
    assert not window_convergence(three, 10, 0.05)["covered"]
    flat = [{"step": s, "loss": 1.0 + 1e-6 * (s % 2)} for s in range(10, 1010, 10)]
    falling = [{"step": s, "loss": 5.0 - 0.004 * s} for s in range(10, 1010, 10)]
    assert is_converged(flat, 1000, 0.05) and not is_converged(falling, 1000, 0.05)
    # the window is the last 200 steps whatever the run's length: an early fall does not count, a late one does
    settled = falling[:50] + [{"step": s, "loss": 3.0} for s in range(510, 1010, 10)]
    assert is_converged(settled, 200, 0.05) and not is_converged(settled, 800, 0.05)
    report = window_convergence(falling, 100, 0.05)
    assert report["slope"] == pytest.approx(-0.004) and report["change"] == pytest.approx(0.4)
    # rows after the learning rate starts decaying are left out
    decaying = flat[:80] + [{"step": s, "loss": 1.0 - 0.001 * (s - 800)} for s in range(810, 1010, 10)]
    assert is_converged(decaying, 300, 0.05, stable_steps=800) and not is_converged(decaying, 300, 0.05)


# ---------------------------------------------------------------- 4. the training stream

def test_packing_keeps_whole_qas_and_stops_before_the_length(world):
    profiles, encoder, split = world
    sampler = QuestionSampler(profiles, (1, 2), hop_ratio=1.0, split=split)
    questions = sampler.sample(34, np.random.default_rng(0))
    _, _, lengths = encoder.encode(questions)
    limit = 1 + int(lengths[:10].sum()) + 3  # room for 10 QAs and part of the 11th
    ids, labels, kept = pack_whole(encoder, questions, limit)
    assert kept == 10 and len(ids) == 1 + int(lengths[:10].sum()) <= limit
    _, answers = questions_to_text(profiles, questions[:10])
    assert encoder.tokenizer.decode(labels[labels != -100]) == "".join(" " + a for a in answers), "no answer is cut"
    assert ids[-1] == encoder.tokenizer.eos_token_id, "the sequence ends on a whole QA"
    with pytest.raises(ValueError, match="max_seq_len=5 holds no whole QA"):
        pack_whole(encoder, questions, 5)


def test_stream_is_fresh_per_chunk_epoch_and_bounded(world):
    profiles, encoder, split = world
    sampler = QuestionSampler(profiles, (1, 2), hop_ratio=1.0, split=split)
    stream = QAStream(encoder, sampler, global_batch=8, chunk=20, max_qas=4, seed=3)
    assert len(stream) == 24 and stream.steps_per_chunk == 3, "a chunk is a whole number of steps"
    first = stream[5]["input_ids"]
    assert torch.equal(first, stream[5]["input_ids"]) and not torch.equal(first, stream[6]["input_ids"])
    stream.set_step(3)  # the next chunk-epoch draws new questions for the same index
    assert stream.epoch == 1 and not torch.equal(first, stream[5]["input_ids"])
    stream.set_step(2)
    assert torch.equal(first, stream[5]["input_ids"])
    assert stream.tally.take().tolist()[:1] == [5] and stream.tally.take().tolist() == [0, 0, 0, 0]
    # the paper presets' streams: the loop permutes one chunk (8 MB), not every sequence of the run (2.6 GB)
    for config in (get_config("paper"), get_multihop_config("paper")):
        assert 8 * config.stream_chunk <= 8.4e6 < 2e9 < 8 * config.max_steps * config.batch_size


def test_a_steps_examples_do_not_depend_on_the_number_of_processes(world):
    profiles, encoder, split = world
    sampler = QuestionSampler(profiles, (1, 2), hop_ratio=1.0, split=split)

    def step_items(world_size: int, step: int) -> list[list[int]]:
        items = []
        for rank in range(world_size):
            stream = QAStream(encoder, sampler, global_batch=8, chunk=16, max_qas=3, seed=1)
            stream.set_step(step)
            batches = BatchSampler(len(stream), 8 // world_size, 7, DistributedContext(rank, rank, world_size))
            items += [stream[i]["input_ids"].tolist() for i in batches.indices(step)]
        return items

    for step in (0, 3, 5):  # chunk-epochs 0, 1 and 2
        assert step_items(1, step) == step_items(2, step) == step_items(4, step)
    assert step_items(1, 3) != step_items(1, 1), "another chunk-epoch, other questions"


# ---------------------------------------------------------------- end to end: 2-hop capacity at checkpoints

@pytest.fixture(scope="module")
def multihop(tmp_path_factory):
    """The smoke 1-hop + 2-hop model, 12 steps, capacity every 4, sequences too short for all 4 QAs."""
    out = tmp_path_factory.mktemp("multihop")
    config = get_multihop_config("smoke", max_steps=12, eval_every=4, max_seq_len=100, converge_window=4)
    return config, out, train_size(config, 0, out, seed=0, device="cpu")


def test_two_hop_capacities_are_logged_at_every_checkpoint(multihop):
    config, out, result = multihop
    m = result.metrics
    assert [c["step"] for c in m["checkpoints"]] == [4, 8, 12] == [c["step"] for c in read_capacity_log(result.folder)]
    for checkpoint in m["checkpoints"]:
        labels = {(r["hops"], r["scheme"], r["path"], r["support"]) for r in checkpoint["capacities"]}
        assert labels == {(h, s, p, sup) for h, s, p in REPORTED for sup in ("generating", "observed")}
        assert set(checkpoint["two_hop_subject_loss_bits"]) < set(checkpoint["subject_loss_bits"])
    assert m["two_hop_capacity_bits"] == find_row(m["capacities"], 2, "2-hop-big-hash", "average",
                                                  config.support)["capacity_bits"]
    assert set(m["convergence"]["series"]) == {"train_loss", "one_hop_loss_bits", "two_hop_loss_bits"}


def test_exposures_count_the_qas_actually_trained(multihop):
    config, out, result = multihop
    m = result.metrics
    tally = read_stream_log(result.folder)[-1]
    assert tally["step"] == 12 and tally["sequences"] == 12 * config.batch_size
    facts = m["num_people"] * (4 + m["num_relations"])
    assert m["exposures_per_fact"] == pytest.approx(tally["one_hop_qas"] / facts)
    assert m["qas_per_sequence_mean"] < config.qas_per_sequence, "100 tokens hold fewer than 4 whole QAs"
    assert m["exposures_per_fact"] < m["exposures_per_fact_planned"] == pytest.approx(config.exposures_per_fact)


def test_collect_worlds_reads_every_world_of_a_sweep(tmp_path):
    sweep = get_sweep("smoke", num_people=(40, 50), max_steps=6, warmup_steps=1, eval_every=3, model_sizes=(16,))
    run_worlds(sweep, tmp_path, device="cpu", worlds=["N50-r4"])
    rows = collect_worlds(sweep, tmp_path)
    assert [(r["world"], r["num_people"]) for r in rows] == [("N50-r4", 50)]
    assert json.loads((tmp_path / "N50-r4" / "size-d16-L1" / "metrics.json").read_text())["steps"] == 6
    with pytest.raises(FileNotFoundError, match="no trained run of the sweep's 2 worlds"):
        collect_worlds(sweep, tmp_path / "elsewhere")
    assert math.isfinite(rows[0]["capacity_bits_by_support"]["observed"])
