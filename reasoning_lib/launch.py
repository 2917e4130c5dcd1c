"""Run the book's sweeps (many independent runs) in sequence here, through submitit's local executor, or as
one SLURM job each through submitit (https://github.com/facebookincubator/submitit).

A :class:`Job` is a command and the resources it asks for; :func:`run_jobs` runs a list of them. A multi-node
job runs one task per node, each starting the same ``torchrun`` command; they meet through torchrun's c10d
rendezvous on the allocation's first host, which the submitted function reads from ``SLURM_JOB_NODELIST`` when
it starts (PyTorch's torchrun documentation, "Elastic launch"). See book/scale_out.md. From the shell::

    python -m reasoning_lib.launch --executor slurm --partition gpu --nodes 2 --gpus-per-node 8 --hours 12 \\
        --torchrun -- reasoning_lib.sedd --preset paper
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import check_choice

EXECUTORS = ("sequential", "local", "slurm")
MASTER, JOB_ID = "{master_addr}", "{job_id}"  # filled in on the node when the job starts
RDZV_PORT = 29500
HEADROOM, MIN_HOURS, MIN_MEM_GB = 1.25, 0.25, 4  # SLURM kills a job at its limits: a plan's estimate gets margin
HUB_ONLINE = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}  # the paper presets load hub models, as `make paper`


class JobFailed(RuntimeError):
    """A job exited with a non-zero code (``returncode`` None when submitit reports a crash without one)."""

    def __init__(self, name: str, returncode: int | None, log: str, detail: str = ""):
        self.name, self.returncode, self.log = name, returncode, str(log)
        code = f"exited with code {returncode}" if returncode is not None else "failed"
        super().__init__(f"job {name!r} {code}{': ' + detail if detail else ''}; its output is in {log}")

    def __reduce__(self):  # submitit pickles the exception of a failed job
        return JobFailed, (self.name, self.returncode, self.log)


@dataclass
class Job:
    """One run: ``command`` (may contain ``{master_addr}``/``{job_id}``), its resources, log folder and env."""

    name: str
    command: list[str]
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None  # None: 4 per GPU (data loading, tokenization), at least 2
    mem_gb: float = 16
    hours: float = 4.0  # SLURM time limit
    log_dir: str | None = None  # None: <run_jobs folder>/<name>
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # None: the working directory of run_jobs
    after: tuple[str, ...] = ()  # names of earlier jobs that must succeed first (they share a trained model)

    def __post_init__(self):
        self.command, self.after = [str(c) for c in self.command], tuple(self.after)
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"Job name={self.name!r}: use letters, digits, '-', '_' or '.' (it names a folder)")
        if not self.command or self.nodes < 1 or self.gpus_per_node < 0 or self.hours <= 0 or self.mem_gb <= 0:
            raise ValueError(f"job {self.name!r} needs a command (got {self.command}), nodes={self.nodes} >= 1, "
                             f"gpus_per_node={self.gpus_per_node} >= 0, hours={self.hours} and "
                             f"mem_gb={self.mem_gb} > 0")
        self.cpus_per_task = self.cpus_per_task or max(2, 4 * self.gpus_per_node)

    @classmethod
    def from_plan(cls, name: str, command: list[str], plan, nodes: int = 1, **overrides) -> Job:
        """A job sized by a resource plan (see :func:`plan_request`); ``overrides`` win over the plan."""
        return cls(name, command, **{**plan_request(plan, nodes), **overrides})


def plan_request(plan, nodes: int = 1) -> dict:
    """What to ask SLURM for a resource plan (any object with ``processes``, ``wall_hours``, ``host_bytes``):
    its processes spread over ``nodes`` as GPUs, 25 % more time and host memory than it estimates."""
    return {"nodes": nodes, "gpus_per_node": math.ceil(plan.processes / nodes),
            "hours": max(MIN_HOURS, HEADROOM * plan.wall_hours),
            "mem_gb": max(MIN_MEM_GB, math.ceil(HEADROOM * plan.host_bytes / 2**30))}


@dataclass
class JobResult:
    """A finished job: its exit code (0), where its output is, and how long it ran."""

    name: str
    returncode: int
    log: str
    seconds: float


def torchrun_command(module_args: list[str], nodes: int = 1, gpus_per_node: int = 1,
                     port: int = RDZV_PORT) -> list[str]:
    """``torchrun ... -m <module_args>``: ``--standalone`` on one node, else the c10d rendezvous on the
    allocation's first host (filled in at run time) with the SLURM job id as rendezvous id."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"torchrun_command needs nodes={nodes} >= 1 and gpus_per_node={gpus_per_node} >= 1")
    if nodes == 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={gpus_per_node}", "-m", *map(str, module_args)]
    return ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={gpus_per_node}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={MASTER}:{port}", f"--rdzv_id={JOB_ID}", "-m", *map(str, module_args)]


def master_host() -> str:
    """The first host of the SLURM allocation (``scontrol show hostnames``, else submitit's parser), or
    127.0.0.1 outside SLURM."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    try:
        return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                              check=True).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):  # no scontrol here: submitit parses the list
        from submitit.slurm.slurm import SlurmJobEnvironment
        return SlurmJobEnvironment().hostnames[0]


def resolve_command(command: list[str]) -> list[str]:
    """``command`` with ``{master_addr}`` and ``{job_id}`` filled in for this node (other braces are kept)."""
    job_id = os.environ.get("SLURM_JOB_ID", "local")
    return [c.replace(MASTER, master_host()).replace(JOB_ID, job_id) if "{" in c else c for c in command]


def _environment(job: Job) -> dict[str, str]:
    env = dict(os.environ)
    # this venv's python, torchrun and papermill first, also on a compute node where it is not activated
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return {**env, **job.env}


def _execute(job: Job, log: Path | None, log_name: str) -> JobResult:
    """Run the command, copying its output (stderr merged) to our stdout and to ``log``; raise if it fails."""
    command, start = resolve_command(job.command), time.time()
    print(f"[{job.name}] $ {shlex.join(command)}", flush=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "w") as sink:
        try:
            proc = subprocess.Popen(command, cwd=job.cwd, env=_environment(job), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as error:
            raise JobFailed(job.name, 127, log_name, f"cannot start {command[0]!r} ({error})") from error
        with proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                sink.write(line)
    sys.stdout.flush()
    if proc.returncode != 0:
        raise JobFailed(job.name, proc.returncode, log_name)
    return JobResult(job.name, 0, log_name, time.time() - start)


@dataclass
class CommandRunner:
    """What submitit pickles and calls on each node: run the job's command, raise if it fails."""

    job: Job

    def __call__(self) -> JobResult:
        import submitit
        # our stdout is submitit's log file already
        return _execute(self.job, None, str(submitit.JobEnvironment().paths.stdout))


def _run_here(job: Job, folder: Path) -> JobResult:
    log = Path(job.log_dir or folder / job.name) / "output.log"
    return _execute(job, log, str(log))


def _executor(kind: str, job: Job, folder: Path, partition, account, dependencies):
    import submitit
    path = Path(job.log_dir or folder / job.name)
    common = {"name": job.name, "timeout_min": math.ceil(60 * job.hours), "nodes": job.nodes, "tasks_per_node": 1,
              **({"gpus_per_node": job.gpus_per_node} if job.gpus_per_node else {})}  # no --gpus-per-node=0
    if kind == "local":
        executor = submitit.LocalExecutor(folder=path)
        executor.update_parameters(**common)
        return executor
    executor = submitit.AutoExecutor(folder=path, cluster="slurm")
    extra = {"slurm_partition": partition, "slurm_account": account,
             "slurm_dependency": "afterok:" + ":".join(d.job_id for d in dependencies) if dependencies else None}
    executor.update_parameters(**common, cpus_per_task=job.cpus_per_task, mem_gb=job.mem_gb,
                               **{k: v for k, v in extra.items() if v is not None})
    return executor


def _result(name: str, submitted) -> JobResult:
    """Wait for a submitit job; a failure raises :class:`JobFailed` naming the job and its log."""
    try:
        return submitted.result()
    except JobFailed:
        raise
    except Exception as error:  # submitit's FailedJobError carries the node's traceback as text
        text = str(error)
        code = re.search(r"JobFailed: job .* exited with code (-?\d+)", text)
        if code:
            raise JobFailed(name, int(code[1]), submitted.paths.stdout) from error
        trace = text.split("-" * 22)  # the last line of the traceback names the exception (a crash, a timeout)
        detail = (trace[1] if len(trace) > 1 else text).strip().splitlines() or [type(error).__name__]
        detail = f"{detail[-1]} (submitit job {submitted.job_id})"
        raise JobFailed(name, None, submitted.paths.stdout, detail) from error


def run_jobs(jobs: list[Job | dict], executor: str = "sequential", folder: str | Path = "_build/launch",
             partition: str | None = None, account: str | None = None, wait: bool = True) -> list:
    """Run ``jobs``: one after the other here ("sequential", stopping at the first failure), or all at once
    through submitit ("local" on this machine, "slurm" as one sbatch job each). Returns the
    :class:`JobResult` of each job in order, or with ``wait=False`` the submitit jobs."""
    check_choice("executor", executor, EXECUTORS)
    jobs = [job if isinstance(job, Job) else Job(**job) for job in jobs]
    seen: set[str] = set()
    for job in jobs:
        missing = [name for name in job.after if name not in seen]
        if job.name in seen or missing:
            raise ValueError(f"job {job.name!r}: names must be unique and after={missing} must name earlier jobs")
        seen.add(job.name)
        if job.nodes > 1 and executor != "slurm":
            raise ValueError(f"job {job.name!r} asks for nodes={job.nodes}: only executor='slurm' runs multi-node jobs")
    folder = Path(folder)
    if executor == "sequential":
        return [_run_here(job, folder) for job in jobs]
    submitted: dict = {}
    for job in jobs:
        if executor == "local":  # no queue here: wait for the jobs this one builds on
            for name in job.after:
                _result(name, submitted[name])
        runner = _executor(executor, job, folder, partition, account, [submitted[n] for n in job.after])
        submitted[job.name] = runner.submit(CommandRunner(job))
        print(f"[{job.name}] submitted as {executor} job {submitted[job.name].job_id}", flush=True)
    if not wait:
        return list(submitted.values())
    return [_result(name, sub) for name, sub in submitted.items()]


def _book_root(root) -> Path:
    from .chapter import book_root
    return Path(root) if root else (book_root() or book_root(Path(__file__).parent) or Path.cwd())


def _request(plan, resources: dict, root, nodes: int = 1, gpus: int = 1, hub: bool = True) -> dict:
    """A sweep job's fields: the plan's request (or paper-scale defaults), then ``resources``; runs from ``root``."""
    base = plan_request(plan, nodes) if plan is not None else {"nodes": nodes, "gpus_per_node": gpus,
                                                                "mem_gb": 64, "hours": 24}
    env = {**(HUB_ONLINE if hub else {}), **resources.get("env", {})}
    return {**base, "cwd": str(root), **resources, "env": env}


def paper_notebook_jobs(preset: str = "paper", output_dir: str = "_build/paper", root=None, plan=None,
                        **resources) -> list[Job]:
    """One papermill job per chapter notebook, as ``make paper`` runs them (creates ``output_dir``)."""
    root = _book_root(root)
    notebooks = sorted((root / "notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no chapter notebooks in {root / 'notebooks'}: pass root=<the book's checkout>")
    (root / output_dir).mkdir(parents=True, exist_ok=True)
    return [Job(nb.stem, ["python", "-m", "papermill", f"notebooks/{nb.name}", f"{output_dir}/{nb.name}", "-p",
                          "preset", preset], **_request(plan, resources, root))
            for nb in notebooks]


def frontier_jobs(tasks=None, methods=None, preset: str = "paper", extra_args=(), root=None, plan=None,
                  **resources) -> list[Job]:
    """One ``python -m reasoning_lib.frontier`` job per (task, method); a method that reuses another's model
    (``dot_sc`` that of ``dot``, ``implicit_cot`` the explicit-CoT teacher) runs after it."""
    from .frontier.presets import METHODS, get_config
    config = get_config(preset)
    tasks, methods = tuple(tasks or config.tasks), tuple(methods or config.methods)
    needs = {m: ("explicit_cot" if m == "implicit_cot" else METHODS[m]) for m in methods}
    root = _book_root(root)
    return [Job(f"frontier-{t}-{m}", ["python", "-m", "reasoning_lib.frontier", "--preset", preset, "--task", t,
                                      "--method", m, *extra_args],
                after=(f"frontier-{t}-{needs[m]}",) if needs[m] != m and needs[m] in methods else (),
                **_request(plan, resources, root))
            for t in tasks for m in methods]


def capacity_jobs(preset: str = "paper", nodes: int = 1, extra_args=(), root=None, plans=None, worlds=None,
                  sizes=None, **resources) -> list[Job]:
    """One job per (world, model size) of chapter 5's sweep (``-m reasoning_lib.capacity --world w --size i``): a
    torchrun on 8 GPUs unless its plan or ``gpus_per_node`` says otherwise (0 GPUs: plain python). ``plans`` maps a
    run's plan name (``capacity.presets.plan_name``) to its resource plan; ``worlds``/``sizes`` pick a subset.
    Runs of one world share it, written atomically by whichever job starts first."""
    from .capacity.presets import get_sweep, plan_name

    sweep = get_sweep(preset)
    root, jobs = _book_root(root), []
    for w in (range(len(sweep.worlds)) if worlds is None else worlds):
        world = sweep.world_config(w)
        for i in (range(len(world.model_sizes)) if sizes is None else sizes):
            plan = (plans or {}).get(plan_name(world, i))
            request = _request(plan, resources, root, nodes, gpus=8, hub=False)
            args = ["reasoning_lib.capacity", "--preset", preset, "--world", str(w), "--size", str(i), *extra_args]
            gpus = request["gpus_per_node"]
            command = torchrun_command(args, request["nodes"], gpus) if gpus else ["python", "-m", *args]
            jobs.append(Job(f"capacity-{sweep.world_label(w)}-size{i}", command, **request))
    return jobs


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser("python -m reasoning_lib.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", default="sequential", choices=EXECUTORS)
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--folder", default="_build/launch", help="logs and submitit files (a shared filesystem)")
    parser.add_argument("--jobs", help="a JSON list of Job fields (name, command, nodes, ...) instead of COMMAND")
    parser.add_argument("--name", default="job")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--mem-gb", type=float, default=16)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--torchrun", action="store_true", help="COMMAND is a module and its arguments: run it "
                        "with torchrun on --nodes x --gpus-per-node processes")
    parser.add_argument("--no-wait", action="store_true", help="return once submitted")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: one job")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if bool(command) == bool(args.jobs):
        parser.error("give either -- COMMAND ... or --jobs FILE.json")
    if args.jobs:
        jobs = [Job(**entry) for entry in json.loads(Path(args.jobs).read_text())]
    else:
        if args.torchrun:
            command = torchrun_command(command, args.nodes, args.gpus_per_node)
        jobs = [Job(args.name, command, args.nodes, args.gpus_per_node, mem_gb=args.mem_gb, hours=args.hours)]
    return run_jobs(jobs, args.executor, args.folder, args.partition, args.account, wait=not args.no_wait)


if __name__ == "__main__":
    try:
        main()
    except (JobFailed, ValueError) as error:
        sys.exit(f"error: {error}")
