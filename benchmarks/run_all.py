"""Run every ``benchmarks/bench_*.py`` and ``gpu_check.py``, and record what they print in ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/run_all.py [--quick] [--only mfu sedd ...] [--timeout SECONDS] [--results PATH]``.

Each benchmark runs as its own process (this Python, ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``, the repository as
working directory) under a time limit; its standard output is kept. ``--quick`` passes each benchmark its
smallest options (``QUICK_ARGS``): that checks that every script runs, in a few minutes on a CPU, and its figures
are not ones to quote. Then one generated section of RESULTS.md, between ``<!-- run_all:begin -->`` and
``<!-- run_all:end -->`` right after the title, is replaced (or inserted): date, machine, Python, torch, device and
each benchmark's output, or how it failed. The hand-written sections around it are left as they are.
A benchmark that fails or times out does not stop the others; it makes the exit status 1.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"

# The smallest/fastest options of each benchmark (by name without 'bench_'); a new script that has a --quick
# flag gets it, one that has neither runs with its defaults.
QUICK_ARGS = {
    "capacity": ["--questions", "2000", "--steps", "4"],
    "distill": ["--steps", "5"],
    "dot": ["--examples", "3", "--steps", "1,4"],
    "implicit_cot": ["--preset", "tiny", "--examples", "16", "--batch", "16"],
    "mfu": ["--quick"],
    "sedd": ["--scale", "tiny", "--steps", "3"],
    "train": ["--quick"],
    "threads": ["--quick"],
    "gpu_check": ["--quick"],
}

# Run in a child process so that this one never initialises CUDA (it would hold GPU memory while benchmarks run).
_TORCH_INFO = """
import importlib.util, json, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "torch": torch.__version__, "cuda_version": torch.version.cuda, "threads": torch.get_num_threads(),
    "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    "flash_attn": importlib.util.find_spec("flash_attn") is not None,
}))
"""


@dataclass
class Outcome:
    name: str  # file name, e.g. bench_mfu.py
    command: list[str]
    status: str  # 'ok', 'failed (exit status N)' or 'timed out after N s'
    seconds: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def discover() -> dict[str, Path]:
    """Benchmark scripts by short name ('mfu' for bench_mfu.py), sorted."""
    found = sorted(HERE.glob("bench_*.py")) + [HERE / "gpu_check.py"]  # gpu_check: the paper models vs their plans
    return {path.stem.removeprefix("bench_"): path for path in found}


def select(scripts: dict[str, Path], only: list[str] | None) -> dict[str, Path]:
    """The scripts named in ``only`` ('mfu', 'bench_mfu' or 'bench_mfu.py'), all of them when None."""
    if not only:
        return scripts
    chosen = {}
    for name in only:
        key = Path(name).stem.removeprefix("bench_")
        if key not in scripts:
            raise SystemExit(f"run_all.py: no benchmark {name!r}; there are {', '.join(scripts)}")
        chosen[key] = scripts[key]
    return chosen


def quick_args(name: str, path: Path) -> list[str]:
    if name in QUICK_ARGS:
        return list(QUICK_ARGS[name])
    return ["--quick"] if '"--quick"' in path.read_text() else []


def benchmark_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_benchmark(name: str, path: Path, args: list[str], timeout: float) -> Outcome:
    command = [sys.executable, str(path), *args]
    tic = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=benchmark_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        text = lambda out: out.decode(errors="replace") if isinstance(out, bytes) else (out or "")  # noqa: E731
        return Outcome(path.name, command, f"timed out after {timeout:.0f} s", time.perf_counter() - tic,
                       text(err.stdout), text(err.stderr))
    status = "ok" if done.returncode == 0 else f"failed (exit status {done.returncode})"
    return Outcome(path.name, command, status, time.perf_counter() - tic, done.stdout, done.stderr)


def _read(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, str]:
    """Platform, CPU, cores, RAM, Python, torch and device, as the rows of the section's table."""
    cpu = _read("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    mem_kib = _read("/proc/meminfo", "MemTotal")
    if mem_kib:
        ram = f"{int(mem_kib.split()[0]) / 2**20:.1f} GiB"
    else:
        try:
            ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
        except (ValueError, OSError, AttributeError):
            ram = "unknown"
    info = {
        "machine": f"{platform.platform()}; {cpu}; {os.cpu_count()} cores; {ram} RAM",
        "Python": f"{platform.python_version()} ({sys.executable})",
    }
    try:
        probe = subprocess.run([sys.executable, "-c", _TORCH_INFO], cwd=ROOT, env=benchmark_env(), capture_output=True,
                               text=True, timeout=300, check=True)
        torch_info = json.loads(probe.stdout.strip().splitlines()[-1])
        cuda = f", CUDA {torch_info['cuda_version']}" if torch_info["cuda_version"] else ""
        info["torch"] = (f"{torch_info['torch']}{cuda}, {torch_info['threads']} threads; flash-attn "
                         f"{'installed' if torch_info['flash_attn'] else 'not installed'}")
        devices = torch_info["devices"]
        info["device"] = ", ".join(devices) if devices else "CPU only"
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError) as err:
        info["torch"] = info["device"] = f"unknown (the torch probe failed: {err})"
    if os.environ.get("OMP_NUM_THREADS"):
        info["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        info["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _clean(text: str) -> str:
    """Text made safe to sit between the markers."""
    return text.replace(BEGIN, "<!-- run_all begin -->").replace(END, "<!-- run_all end -->").rstrip()


def _as_markdown(output: str) -> str:
    """A benchmark's standard output, with a blank line before each table (else it renders as the text above)."""
    lines: list[str] = []
    for line in _clean(output).splitlines():
        if line.startswith("|") and lines and lines[-1].strip() and not lines[-1].startswith("|"):
            lines.append("")
        lines.append(line.rstrip())
    return "\n".join(lines)


def render_section(outcomes: list[Outcome], info: dict[str, str], quick: bool, when: dt.datetime) -> str:
    """The generated section, markers included."""
    mode = ("quick: each benchmark's smallest options; these figures check that the scripts run and are not ones "
            "to quote" if quick else "full: each benchmark's default options")
    failed = [o for o in outcomes if not o.ok]
    lines = [
        BEGIN,
        f"## Latest `run_all.py` run ({when:%Y-%m-%d %H:%M} UTC)",
        "",
        "Generated by `benchmarks/run_all.py` (`make bench`): the next run replaces everything between the run_all "
        "markers; the dated sections below it are written by hand.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value.replace('|', '/')} |" for key, value in info.items()),
        f"| mode | {mode} |",
        f"| result | {len(outcomes) - len(failed)} of {len(outcomes)} benchmarks ran"
        + (f"; {', '.join(f'{o.name} {o.status}' for o in failed)}" if failed else "") + " |",
        "",
    ]
    for outcome in outcomes:
        shown = " ".join(["python", str(Path(outcome.command[1]).relative_to(ROOT)), *outcome.command[2:]])
        lines += [f"### {outcome.name}: {outcome.status} in {outcome.seconds:.1f} s", "", f"`{shown}`", ""]
        if outcome.stdout.strip():
            lines += [_as_markdown(outcome.stdout), ""]
        if not outcome.ok:
            tail = "\n".join(_clean(outcome.stderr).replace("```", "'''").splitlines()[-30:]) or "(nothing on stderr)"
            lines += ["Last lines of its standard error:", "", "```text", tail, "```", ""]
    lines.append(END)
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """``text`` with its run_all section replaced by ``section``, or ``section`` inserted after the title line."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin >= 0 and end > begin:
        return text[:begin] + section + text[end + len(END):]
    if begin >= 0 or end >= 0:
        raise ValueError(f"RESULTS.md has one run_all marker without the other ({BEGIN} ... {END}): fix it by hand")
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("# "):  # after the title and its blank line
        head, rest = lines[0], "".join(lines[1:]).lstrip("\n")
        return head.rstrip("\n") + "\n\n" + section + "\n\n" + rest
    return section + "\n\n" + text


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(replace_section(text, section).rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark's smallest options (QUICK_ARGS)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benchmarks only, e.g. mfu sedd")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each benchmark may take (default 600 with --quick, else 3600)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="the file to update")
    args = parser.parse_args(argv)
    scripts = select(discover(), args.only)
    timeout = args.timeout or (600.0 if args.quick else 3600.0)
    when = dt.datetime.now(dt.timezone.utc)
    info = machine_info()
    for key, value in info.items():
        print(f"{key}: {value}")
    outcomes = []
    for name, path in scripts.items():
        extra = quick_args(name, path) if args.quick else []
        print(f"\n=== {path.name} {' '.join(extra)}", flush=True)
        outcome = run_benchmark(name, path, extra, timeout)
        print(outcome.stdout.rstrip())
        if not outcome.ok:
            print("\n".join(outcome.stderr.rstrip().splitlines()[-30:]), file=sys.stderr)
        print(f"=== {path.name}: {outcome.status} in {outcome.seconds:.1f} s", flush=True)
        outcomes.append(outcome)
    write_section(args.results, render_section(outcomes, info, args.quick, when))
    failed = [o.name for o in outcomes if not o.ok]
    print(f"\nwrote the run_all section of {args.results}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
