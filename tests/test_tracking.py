"""Tracking: TensorBoard scalars read back exactly, no-op ranks, the missing-wandb error, resume purging."""
import sys

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from reasoning_lib.tracking import Tracker, make_tracker, scalars  # noqa: E402


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in ``log_dir`` as a list of (step, value)."""
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_reads_back_the_logged_values(tmp_path):
    tracker = make_tracker(tmp_path, "tensorboard")
    tracker.log_hparams({"lr": 0.001, "schedule": "cosine"})
    tracker.log({"step": 2, "loss": 1.5, "lr": 0.25, "grad_norm": None, "tokens_per_s": 1024.0}, step=2)
    row = {"step": 4, "loss": 0.75, "lr": 0.125, "grad_norm": 3.0, "note": "text", "tokens_per_s": 2048.0}
    tracker.log(row, step=4)
    tracker.close()
    got = read_scalars(tmp_path / "tensorboard")
    assert got == {
        "train/loss": [(2, 1.5), (4, 0.75)],
        "train/lr": [(2, 0.25), (4, 0.125)],
        "train/grad_norm": [(4, 3.0)],  # the None at step 2 is skipped, not logged as 0 or NaN
        "train/tokens_per_s": [(2, 1024.0), (4, 2048.0)],
    }


def test_scalars_keeps_numbers_only():
    row = {"step": 3, "loss": 2, "grad_norm": None, "name": "x", "done": True, "eval/acc": 0.5}
    assert scalars(row) == {"train/loss": 2.0, "eval/acc": 0.5}


def test_non_main_rank_writes_nothing(tmp_path):
    tracker = make_tracker(tmp_path / "run", "tensorboard", is_main=False)
    tracker.log({"loss": 1.0}, step=1)
    tracker.log_hparams({"lr": 0.1})
    tracker.close()
    assert type(tracker) is Tracker and tracker.children == []
    assert not (tmp_path / "run").exists()


def test_none_backend_writes_nothing(tmp_path):
    make_tracker(tmp_path, "none").log({"loss": 1.0}, step=1)
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_is_named(tmp_path):
    with pytest.raises(ValueError, match="backends='mlflow'"):
        make_tracker(tmp_path, ("tensorboard", "mlflow"))


@pytest.mark.parametrize("ask", ["backends", "env"])
def test_wandb_without_the_package_says_how_to_install(tmp_path, monkeypatch, ask):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    if ask == "env":
        monkeypatch.setenv("REASONING_WANDB", "1")
    backends = "tensorboard,wandb" if ask == "backends" else "tensorboard"
    for is_main in (True, False):  # every rank fails, so no rank waits for a crashed rank 0
        with pytest.raises(ImportError, match="pip install wandb"):
            make_tracker(tmp_path, backends, is_main=is_main)


def test_resume_purges_points_after_the_checkpoint(tmp_path):
    first = make_tracker(tmp_path, "tensorboard")
    for step in range(1, 11):
        first.log({"loss": float(step)}, step=step)
    first.close()  # the "crashed" run got to step 10; its checkpoint is at step 5
    resumed = make_tracker(tmp_path, "tensorboard", resume_step=5)
    for step in range(6, 9):
        resumed.log({"loss": 100.0 + step}, step=step)
    resumed.close()
    points = read_scalars(tmp_path / "tensorboard")["train/loss"]
    assert points == [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 9)]


def test_wandb_resumed_run_reuses_its_id(tmp_path, monkeypatch):
    calls = []

    class FakeRun:  # stands in for wandb.sdk's Run, so the test needs no wandb install
        def log(self, data, step):
            calls.append(("log", data, step))

        def finish(self):
            calls.append(("finish",))

    fake = type(sys)("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for _ in range(2):  # the first run, then its resumption from the same output_dir
        tracker = make_tracker(tmp_path, "wandb", run_name="r", settings={"lr": 0.1}, project="p")
        tracker.log({"step": 1, "loss": 0.5, "grad_norm": None}, step=1)
        tracker.close()
    inits = [c[1] for c in calls if c[0] == "init"]
    run_id = (tmp_path / "wandb_id.txt").read_text()
    assert inits == [dict(project="p", dir=str(tmp_path), name="r", config={"lr": 0.1}, resume="allow", id=run_id)] * 2
    assert ("log", {"train/loss": 0.5}, 1) in calls and not (tmp_path / "tensorboard").exists()
