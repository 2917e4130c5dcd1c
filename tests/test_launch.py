"""reasoning_lib.launch: sequential runs, submitit's local executor, the SLURM parameters, the sweeps' job lists."""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from reasoning_lib import launch
from reasoning_lib.launch import Job, JobFailed, run_jobs, torchrun_command

PY = sys.executable


def write_file(path: Path, text: str) -> list[str]:
    return [PY, "-c", f"import pathlib; pathlib.Path({str(path)!r}).write_text({text!r}); print('wrote', {text!r})"]


def test_sequential_runs_jobs_in_order_and_logs_their_output(tmp_path):
    jobs = [Job("first", write_file(tmp_path / "a.txt", "A")), Job("second", write_file(tmp_path / "b.txt", "B"))]
    results = run_jobs(jobs, "sequential", folder=tmp_path / "logs")
    assert [r.name for r in results] == ["first", "second"]
    assert [r.returncode for r in results] == [0, 0]
    assert (tmp_path / "a.txt").read_text() == "A" and (tmp_path / "b.txt").read_text() == "B"
    assert Path(results[1].log) == tmp_path / "logs" / "second" / "output.log"
    assert "wrote B" in Path(results[1].log).read_text()


def test_sequential_stops_at_the_first_failure(tmp_path):
    jobs = [Job("ok", [PY, "-c", "pass"]), Job("broken", [PY, "-c", "import sys; print('boom'); sys.exit(3)"]),
            Job("never", write_file(tmp_path / "never.txt", "x"))]
    with pytest.raises(JobFailed, match=r"job 'broken' exited with code 3.*broken/output\.log") as info:
        run_jobs(jobs, "sequential", folder=tmp_path / "logs")
    assert info.value.returncode == 3 and "boom" in Path(info.value.log).read_text()
    assert not (tmp_path / "never.txt").exists()


def test_job_env_cwd_and_a_missing_program(tmp_path):
    job = Job("env", [PY, "-c", "import os; open('out.txt', 'w').write(os.environ['LAUNCH_TEST'])"],
              env={"LAUNCH_TEST": "42"}, cwd=str(tmp_path))
    run_jobs([job], folder=tmp_path / "logs")
    assert (tmp_path / "out.txt").read_text() == "42"
    with pytest.raises(JobFailed, match="code 127: cannot start 'no-such-program-xyz'"):
        run_jobs([Job("missing", ["no-such-program-xyz"])], folder=tmp_path / "logs")


def test_job_checks_and_ordering_errors(tmp_path):
    with pytest.raises(ValueError, match="name=.a b.: use letters"):
        Job("a b", ["true"])
    with pytest.raises(ValueError, match="nodes=0"):
        Job("x", ["true"], nodes=0)
    with pytest.raises(ValueError, match=r"after=\['later'\] must name earlier jobs"):
        run_jobs([Job("first", ["true"], after=("later",)), Job("later", ["true"])], folder=tmp_path)
    with pytest.raises(ValueError, match="only executor='slurm' runs multi-node"):
        run_jobs([Job("big", ["true"], nodes=2)], "local", folder=tmp_path)
    with pytest.raises(ValueError, match="executor='cloud'"):
        run_jobs([], "cloud")
    assert Job("gpu", ["true"], gpus_per_node=8).cpus_per_task == 32


def test_local_executor_runs_the_job_and_logs_to_submitit_folder(tmp_path):
    first = Job("local-job", write_file(tmp_path / "done.txt", "local"))
    # `after`: the second job starts once the first succeeded, so it finds the first one's file
    second = Job("then", [PY, "-c", f"print(open({str(tmp_path / 'done.txt')!r}).read() + ' seen')"],
                 after=("local-job",))
    results = run_jobs([first, second], "local", folder=tmp_path / "sub")
    assert (tmp_path / "done.txt").read_text() == "local" and "local seen" in Path(results[1].log).read_text()
    log = Path(results[0].log)
    assert log.parent == tmp_path / "sub" / "local-job" and log.name.endswith("_log.out")
    assert "wrote local" in log.read_text()


def test_local_executor_failure_names_job_and_log(tmp_path):
    with pytest.raises(JobFailed, match=r"job 'bad'.*exited with code 5.*_log\.out"):
        run_jobs([Job("bad", [PY, "-c", "raise SystemExit(5)"])], "local", folder=tmp_path / "sub")


class FakeExecutor:
    """Stands in for submitit.AutoExecutor: records what run_jobs asks SLURM for."""

    made: list = []

    def __init__(self, folder, cluster):
        self.folder, self.cluster, self.parameters = Path(folder), cluster, {}
        FakeExecutor.made.append(self)

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    def submit(self, fn):
        assert callable(fn) and fn.job.name
        return SimpleNamespace(job_id=str(100 + len(FakeExecutor.made)), fn=fn)


def test_slurm_executor_parameters(tmp_path, monkeypatch):
    import submitit
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    FakeExecutor.made = []
    jobs = [Job("train", ["python", "-V"], nodes=2, gpus_per_node=8, mem_gb=200, hours=1.5),
            Job("measure", ["python", "-V"], gpus_per_node=1, after=("train",))]
    submitted = run_jobs(jobs, "slurm", folder=tmp_path, partition="gpu", account="lab", wait=False)
    train, measure = FakeExecutor.made
    assert train.cluster == "slurm" and train.folder == tmp_path / "train"
    assert train.parameters == {"name": "train", "timeout_min": 90, "nodes": 2, "gpus_per_node": 8,
                                "tasks_per_node": 1, "cpus_per_task": 32, "mem_gb": 200,
                                "slurm_partition": "gpu", "slurm_account": "lab"}
    assert measure.parameters["slurm_dependency"] == f"afterok:{submitted[0].job_id}"
    assert measure.parameters["nodes"] == 1 and measure.parameters["timeout_min"] == 240
    assert measure.parameters["gpus_per_node"] == 1


def test_slurm_executor_writes_the_sbatch_file(tmp_path, monkeypatch):
    """The real submitit SLURM executor, with stand-ins for srun and sbatch: the batch script it submits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).write_text("#!/bin/sh\necho 'Submitted batch job 777'\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    jobs = [Job("train", ["python", "-V"], nodes=2, gpus_per_node=8, mem_gb=200, hours=1.5),
            Job("measure", ["python", "-V"], after=("train",))]
    submitted = run_jobs(jobs, "slurm", folder=tmp_path / "sub", partition="gpu", wait=False)
    assert [s.job_id for s in submitted] == ["777", "777"]
    train = (tmp_path / "sub" / "train" / "777_submission.sh").read_text()
    for flag in ("--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=1", "--time=90", "--mem=200GB",
                 "--cpus-per-task=32", "--partition=gpu", "--job-name=train"):
        assert f"#SBATCH {flag}\n" in train
    measure = (tmp_path / "sub" / "measure" / "777_submission.sh").read_text()
    assert "#SBATCH --dependency=afterok:777\n" in measure and "--gpus-per-node" not in measure


def test_from_plan_adds_headroom():
    plan = SimpleNamespace(processes=16, wall_hours=2.0, host_bytes=100 * 2**30)
    job = Job.from_plan("sized", ["true"], plan, nodes=2)
    assert (job.nodes, job.gpus_per_node, job.hours, job.mem_gb) == (2, 8, 2.5, 125)
    small = Job.from_plan("small", ["true"], SimpleNamespace(processes=1, wall_hours=0.01, host_bytes=1), hours=3)
    assert (small.hours, small.mem_gb) == (3, launch.MIN_MEM_GB)


def test_torchrun_command_multi_and_single_node(monkeypatch):
    command = torchrun_command(["reasoning_lib.sedd", "--preset", "paper"], nodes=2, gpus_per_node=8)
    assert command[:6] == ["torchrun", "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
                           "--rdzv_endpoint={master_addr}:29500", "--rdzv_id={job_id}"]
    assert command[6:] == ["-m", "reasoning_lib.sedd", "--preset", "paper"]
    assert torchrun_command(["m"], 1, 4) == ["torchrun", "--standalone", "--nproc_per_node=4", "-m", "m"]
    # on a node: the first host of the allocation (submitit parses the list where scontrol is missing)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08],cpu1")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    resolved = launch.resolve_command(command + ["-c", "{'kept': 1}"])
    assert resolved[4:6] == ["--rdzv_endpoint=gpu07:29500", "--rdzv_id=4242"] and resolved[-1] == "{'kept': 1}"
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert launch.master_host() == "127.0.0.1"


def test_cli_runs_a_command_and_a_jobs_file(tmp_path, capsys):
    target = tmp_path / "cli.txt"
    results = launch.main(["--executor", "sequential", "--folder", str(tmp_path / "logs"), "--name", "cli", "--",
                           *write_file(target, "from the cli")])
    assert target.read_text() == "from the cli" and results[0].name == "cli"
    assert "wrote from the cli" in capsys.readouterr().out
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps([{"name": "j1", "command": write_file(tmp_path / "j1.txt", "1")},
                                {"name": "j2", "command": write_file(tmp_path / "j2.txt", "2"), "after": ["j1"]}]))
    assert [r.name for r in launch.main(["--jobs", str(spec), "--folder", str(tmp_path / "logs")])] == ["j1", "j2"]
    assert (tmp_path / "j2.txt").read_text() == "2"
    with pytest.raises(SystemExit):
        launch.main(["--jobs", str(spec), "--", "true"])


def test_paper_notebook_jobs_one_per_chapter(tmp_path):
    root = tmp_path / "book"
    (root / "notebooks" / "frontier").mkdir(parents=True)
    for name in ("02_b.ipynb", "01_a.ipynb", "frontier/run_method.ipynb", "scratch.ipynb"):
        (root / "notebooks" / name).write_text("{}")
    jobs = launch.paper_notebook_jobs(root=root)
    assert [j.name for j in jobs] == ["01_a", "02_b"] and (root / "_build" / "paper").is_dir()
    assert jobs[0].command == ["python", "-m", "papermill", "notebooks/01_a.ipynb", "_build/paper/01_a.ipynb",
                               "-p", "preset", "paper"]
    assert jobs[0].cwd == str(root) and jobs[0].env["HF_HUB_OFFLINE"] == "0" and jobs[0].gpus_per_node == 1
    real = launch.paper_notebook_jobs(root=Path(__file__).resolve().parents[1], output_dir=str(tmp_path / "out"))
    assert len(real) == len(list((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))) >= 8


def test_frontier_jobs_one_per_task_and_method():
    from reasoning_lib.frontier.presets import get_config
    config = get_config("paper")
    jobs = launch.frontier_jobs()
    assert len(jobs) == len(config.tasks) * len(config.methods)
    names = {j.name: j for j in jobs}
    sc = names["frontier-4x4-dot_sc"]
    assert sc.command[-4:] == ["--task", "4x4", "--method", "dot_sc"] and sc.after == ("frontier-4x4-dot",)
    assert names["frontier-gsm8k-implicit_cot"].after == ("frontier-gsm8k-explicit_cot",)
    few = launch.frontier_jobs(tasks=["3x3"], methods=["dot_sc", "no_cot"], extra_args=["--seed", "1"], hours=2)
    assert [j.name for j in few] == ["frontier-3x3-dot_sc", "frontier-3x3-no_cot"] and few[0].after == ()
    assert few[1].command[-2:] == ["--seed", "1"] and few[1].hours == 2
    nccl = launch.frontier_jobs(tasks=["3x3"], methods=["no_cot"], env={"NCCL_SOCKET_IFNAME": "ib0"})[0].env
    assert nccl == {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "NCCL_SOCKET_IFNAME": "ib0"}


def test_capacity_jobs_one_torchrun_per_world_and_size():
    from reasoning_lib.capacity.presets import get_sweep, plan_name

    sweep = get_sweep("paper")
    jobs = launch.capacity_jobs(nodes=2)
    assert len(jobs) == len(sweep.worlds) * len(sweep.base.model_sizes)
    first = sweep.world_label(0)
    assert jobs[2].name == f"capacity-{first}-size2"
    assert jobs[2].command[-8:] == ["-m", "reasoning_lib.capacity", "--preset", "paper", "--world", "0", "--size", "2"]
    assert "--nnodes=2" in jobs[2].command and (jobs[2].nodes, jobs[2].gpus_per_node) == (2, 8)
    cpu = launch.capacity_jobs(preset="tiny", gpus_per_node=0, sizes=[0])
    assert cpu[0].command == ["python", "-m", "reasoning_lib.capacity", "--preset", "tiny", "--world", "0", "--size", "0"]
    plans = {plan_name(sweep.world_config(1), 0): SimpleNamespace(processes=4, wall_hours=1.0, host_bytes=2**33)}
    planned = launch.capacity_jobs(plans=plans, worlds=[1], sizes=[0])[0]
    assert "--nproc_per_node=4" in planned.command and (planned.gpus_per_node, planned.hours) == (4, 1.25)
    assert planned.mem_gb == 10 and planned.env == {}  # 8 GiB host memory + 25 %
