"""Capacity training glue: train_size at the smoke preset, reload/resume, collect_sweep, probe rows, presets."""
import json
import shutil

import numpy as np
import pytest

from reasoning_lib.capacity import training
from reasoning_lib.capacity.presets import CapacityConfig, get_config, get_multihop_config
from reasoning_lib.capacity.probing import GROUPS, probe_dataset, probe_grids
from reasoning_lib.capacity.questions import subject_text
from reasoning_lib.capacity.splits import EVAL_MODES
from reasoning_lib.capacity.plots import capacity_table, sweep_table
from reasoning_lib.capacity.stream import read_stream_log
from reasoning_lib.capacity.training import collect_sweep, is_converged, prepare_world, read_capacity_log, train_size

METRIC_KEYS = {"num_parameters", "subject_loss_bits", "capacity_bits", "bits_per_param", "dataset_entropy_bits",
               "steps", "converged", "initial_loss_bits", "one_hop_loss_bits", "subject_capacity_bits", "splits"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke-preset size trained once: (config, output folder, result)."""
    out = tmp_path_factory.mktemp("capacity")
    config = get_config("smoke")
    return config, out, train_size(config, 0, out, seed=0, device="cpu")


def test_train_size_lowers_the_answer_loss_and_writes_metrics(smoke):
    config, out, result = smoke
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics), f"metrics.json lacks {METRIC_KEYS - set(metrics)}"
    assert metrics["one_hop_loss_bits"] < 0.8 * metrics["initial_loss_bits"], \
        "30 smoke steps should cut the answer loss: is the loss on the answer tokens (labels != -100)?"
    assert metrics["steps"] == config.max_steps and set(metrics["splits"]) == set(EVAL_MODES)
    assert set(metrics["subject_loss_bits"]) == set(metrics["subject_capacity_bits"])
    assert len(metrics["subject_loss_bits"]) == 8, "one loss per subject: 4 attributes + 4 relations"
    assert metrics["bits_per_param"] == pytest.approx(metrics["capacity_bits"] / metrics["num_parameters"])
    assert (result.folder / "model" / "config.json").is_file(), "model saved with save_pretrained"
    assert (result.folder / "model" / "tokenizer.json").is_file(), "tokenizer saved next to the model"


def test_rerun_reloads_instead_of_retraining(smoke, monkeypatch):
    config, out, result = smoke

    def no_training(*args, **kwargs):
        raise AssertionError("train() was called for a finished run")

    monkeypatch.setattr(training, "train", no_training)
    again = train_size(config, 0, out, seed=0, device="cpu")
    assert again.metrics == result.metrics and again.history == result.history
    other_eval = get_config("smoke", eval_per_mode=16)  # an evaluation setting: re-evaluate, do not retrain
    reevaluated = train_size(other_eval, 0, out, seed=0, device="cpu")
    assert reevaluated.metrics["eval_settings"]["eval_per_mode"] == 16
    assert reevaluated.metrics["num_parameters"] == result.metrics["num_parameters"]
    train_size(config, 0, out, seed=0, device="cpu")  # back to the fixture's evaluation for the other tests


def test_a_longer_run_resumes_from_the_checkpoint(smoke, tmp_path, capsys):
    config, out, result = smoke
    shutil.copytree(out, tmp_path / "run")
    longer = train_size(get_config("smoke", max_steps=40), 0, tmp_path / "run", seed=0, device="cpu")
    assert "resuming from" in capsys.readouterr().out, "the 30-step checkpoint should be resumed, not retrained"
    assert longer.metrics["steps"] == 40
    assert [r["loss"] for r in longer.history[:30]] == [r["loss"] for r in result.history], "resume rewrote the log"
    # the QA tallies and the capacity log continue from the checkpoint instead of starting over
    assert [(r["step"], r["sequences"]) for r in read_stream_log(longer.folder)] == [(30, 240), (40, 320)]
    assert [c["step"] for c in longer.metrics["checkpoints"]] == [10, 20, 30, 40]
    assert longer.metrics["checkpoints"][:3] == result.metrics["checkpoints"]


def test_collect_sweep_reads_what_train_size_wrote(smoke, tmp_path):
    config, out, result = smoke
    assert collect_sweep(out, config) == [result.metrics]
    assert collect_sweep(out) == [result.metrics]
    with pytest.raises(FileNotFoundError, match="no size-"):
        collect_sweep(tmp_path)


def test_collect_sweep_never_reports_a_run_of_other_hop_orders(smoke, tmp_path):
    config, out, result = smoke
    two_hop = get_config("smoke", orders=(1, 2))
    assert two_hop.size_label(0) == "d16-L1-h12" and result.metrics["orders"] == [1]
    with pytest.raises(FileNotFoundError, match=r"for hop orders \(1, 2\)"):
        collect_sweep(out, two_hop)  # the 1-hop run is not this config's
    shutil.copytree(out / f"size-{config.size_label(0)}", tmp_path / "size-d16-L1-h12")  # a mislabelled folder
    with pytest.raises(ValueError, match=r"orders: \[1\] -> \[1, 2\]"):
        collect_sweep(tmp_path, two_hop)
    with pytest.raises(ValueError, match="seed: 0 -> 1"):
        collect_sweep(out, config, seed=1)


def test_capacity_is_reported_under_both_entropy_conventions(smoke):
    config, out, result = smoke
    m = result.metrics
    assert m["support"] == "generating" and set(m["capacity_bits_by_support"]) == {"generating", "observed"}
    assert m["capacity_bits_by_support"]["generating"] == m["capacity_bits"]
    world = prepare_world(config, out, seed=0)
    gap = m["dataset_entropy_bits_by_support"]["generating"] - m["dataset_entropy_bits_by_support"]["observed"]
    assert gap > 0.3 * world.profiles.num_people * world.profiles.num_relations, "observed support is lower"
    table = sweep_table([m])
    for support in ("generating", "observed"):
        assert table.loc[m["size"], f"capacity (bits, {support})"] == round(m["capacity_bits_by_support"][support])
    assert table.loc[m["size"], "exposures / fact"] == 3.0  # 30 steps x 8 x 4 whole QAs / (40 x 8) facts
    assert list(capacity_table(m).columns) == ["generating", "observed"]
    assert [c["step"] for c in read_capacity_log(result.folder)] == [10, 20, 30] == [c["step"] for c in m["checkpoints"]]


def test_probe_rows_index_the_name_relation_and_attribute_tokens(smoke):
    config, out, result = smoke
    world = prepare_world(config, out, seed=0)
    data = probe_dataset(world.profiles, world.tokenizer, 60, seed=1, split=world.split)
    assert list(data.groups) == list(GROUPS) and len(data.sequences) == 60
    q, profiles = data.questions, world.profiles
    for row, ids in enumerate(data.sequences):
        # a word's leading space may be a token of its own (outside the span): compare without it
        text = {g: world.tokenizer.decode([ids[i] for i in data.groups[g][row]]).strip() for g in GROUPS}
        assert text["name"] == profiles.names[q.person[row]], f"name tokens decode to {text['name']!r}"
        assert text["relation"] == subject_text(profiles.relation_names[q.relation[row]])
        assert text["attribute"] == subject_text(profiles.subjects[q.subject[row]])
        assert text["last"] == ":" and data.groups["last"][row] == [len(ids) - 1]
    assert np.array_equal(data.targets["bridge entity"].numpy(), profiles.relations[q.person, q.relation])
    pairs = q.person * profiles.num_relations + q.relation
    num_train = int((1 - data.eval_fraction) * 60)
    assert not set(pairs[num_train:]) & set(pairs[:num_train]), "held-out probe rows must ask about unseen pairs"
    grids = probe_grids(result.load_model("cpu"), data, config, world.tokenizer.pad_token_id)
    assert grids["bridge entity"]["held-out"].accuracy.shape == (config.num_hidden_layers + 1, len(GROUPS))


def test_bad_presets_sizes_and_settings_name_the_parameter(smoke, tmp_path):
    config, out, result = smoke
    with pytest.raises(ValueError, match="preset='huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown parameter"):
        get_multihop_config("smoke", num_layers=3)
    with pytest.raises(ValueError, match="size=2 is out of range"):
        train_size(config, 2, tmp_path, device="cpu")
    with pytest.raises(ValueError, match="multiples of 16"):
        CapacityConfig(model_sizes=(40,))
    with pytest.raises(ValueError, match="orders="):
        CapacityConfig(orders=(3,))
    with pytest.raises(ValueError, match="lacks 2"):
        training.train_multihop(config, tmp_path, device="cpu")


def test_tiny_presets_show_every_fact_100_times_and_convergence_reads_the_slope(smoke):
    assert get_config("tiny").exposures_per_fact >= 100 and get_multihop_config("tiny").exposures_per_fact >= 100
    flat = [{"step": s, "loss": 1.0 + 1e-6 * (s % 2)} for s in range(10, 1010, 10)]
    falling = [{"step": s, "loss": 5.0 - 0.004 * s} for s in range(10, 1010, 10)]
    assert is_converged(flat, 1000, 0.05) and not is_converged(falling, 1000, 0.05)
    # a run shorter than the fixed window is not converged, however flat its few losses
    config, out, result = smoke
    short = get_config("smoke", max_steps=3, warmup_steps=1)
    assert not is_converged([{"step": s, "loss": 1.0} for s in (1, 2, 3)], short.converge_window, 0.05)
    assert result.metrics["convergence"]["series"]["train_loss"]["window"] == config.converge_window
