"""Rerun each chapter's comparison over several seeds and record the spread (``make seeds``).

One run of a chapter is one draw: its data, initial weights and data order all follow ``seed``. This module runs
the chapters with papermill at one preset (default ``tiny``) for each seed, every seed in its own folder laid out
as the book's ``outputs/`` (so chapter 2 reuses that seed's chapter-1 models, as in the book), collects the
headline numbers of each ``metrics.json`` and writes

- ``benchmarks/seeds.json``: per chapter and number, the value of every seed, their mean, range and spread;
- a dated section of ``benchmarks/RESULTS.md`` between the ``seeds`` markers (replaced by the next run);
- ``book/seeds.md``, the same tables as a page of the book.

A finished seed is reloaded, not retrained: rerunning after an interruption continues where it stopped.

    python -m reasoning_lib.seeds --chapters 07_causal_distillation --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ("01_multiplication_baselines", "02_implicit_cot", "03_discrete_diffusion", "04_diffusion_of_thoughts",
            "05_knowledge_capacity", "06_probing_multihop", "07_causal_distillation", "08_reasoning_frontier")
# the numbers a chapter's comparison is about (metrics.json keys, nested dicts joined with "."), by their ending
HEADLINE = (".accuracy", ".iia", ".iia_on_flips", "bits_per_param", ".elbo_perplexity")
MARKERS = ("<!-- seeds:begin -->", "<!-- seeds:end -->")
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SEEDS_JSON = ROOT / "benchmarks" / "seeds.json"
PAGE = ROOT / "book" / "seeds.md"


def chapter_parameters(chapter: str, seed_root: Path) -> dict:
    """Where a chapter finds the earlier chapters of the same seed (the book's defaults, under ``seed_root``)."""
    def at(name):
        return str(seed_root / name)
    return {"02_implicit_cot": {"baseline_dir": at("01_multiplication_baselines")},
            "04_diffusion_of_thoughts": {"baselines_dir": str(seed_root)},
            "08_reasoning_frontier": {"reuse_dirs": f"{at('02_implicit_cot')},{at('04_diffusion_of_thoughts')}"},
            }.get(chapter, {})


def run_chapter(chapter: str, seed: int, preset: str, root: Path) -> Path:
    """Execute one chapter at ``preset`` and ``seed`` into ``root/seed-<seed>/<chapter>``; returns that folder."""
    import papermill

    seed_root = root / f"seed-{seed}"
    out = seed_root / chapter
    out.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{chapter}.ipynb"), str(out / f"{chapter}.ipynb"), cwd=str(ROOT / "notebooks"),
        kernel_name="python3", progress_bar=False,
        parameters={"preset": preset, "seed": seed, "output_dir": str(out), **chapter_parameters(chapter, seed_root)})
    return out


def headline_numbers(metrics: dict, prefix: str = "", inside: bool = False) -> dict[str, float]:
    """The finite numbers of ``metrics`` whose key, or a dict key above it, ends with one of ``HEADLINE``."""
    found = {}
    for key, value in metrics.items():
        name, headline = f"{prefix}{key}", inside or f"{prefix}{key}".endswith(HEADLINE)
        if isinstance(value, dict):
            found |= headline_numbers(value, name + ".", headline)
        elif headline and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[name] = float(value)
    return found


def spread(values: list[float]) -> dict:
    """Mean, range and sample standard deviation (0 for one value) of one number over seeds."""
    return {"values": values, "mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(per_seed: dict[int, dict[str, float]]) -> dict[str, dict]:
    """``{number: spread}`` over the seeds that report it (a number missing from one seed is named, not dropped)."""
    names = sorted({name for numbers in per_seed.values() for name in numbers})
    table = {}
    for name in names:
        missing = [s for s, numbers in per_seed.items() if name not in numbers]
        table[name] = spread([per_seed[s][name] for s in sorted(per_seed) if name in per_seed[s]])
        if missing:
            table[name]["missing_seeds"] = missing
    return table


def machine() -> str:
    """The machine a run's numbers come from, in one line."""
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores{memory}, {device}; torch {torch.__version__}"


def to_markdown(record: dict) -> str:
    """The tables of one seeds run: one per chapter, a row per headline number."""
    lines = [f"## Seeds: each chapter's `{record['preset']}` run over seeds {', '.join(map(str, record['seeds']))} "
             f"({record['date']})", "",
             f"Machine: {record['machine']}. Written by `make seeds` (`python -m reasoning_lib.seeds`); the next "
             "run replaces this section. Fractions in percent; sd is the sample standard deviation over seeds.", ""]
    for chapter, entry in record["chapters"].items():
        lines += [f"### {chapter} ({entry['minutes']:.0f} min for {len(record['seeds'])} seeds)", "",
                  "| number | " + " | ".join(f"seed {s}" for s in record["seeds"]) + " | mean | range | sd |",
                  "|---|" + "---:|" * (len(record["seeds"]) + 3)]
        for name, row in entry["numbers"].items():
            percent = not name.endswith(("bits_per_param", "perplexity"))
            shown = (lambda v: f"{100 * v:.1f}") if percent else (lambda v: f"{v:.3g}")
            by_seed = dict(zip([s for s in record["seeds"] if s not in row.get("missing_seeds", [])], row["values"]))
            cells = [shown(by_seed[s]) if s in by_seed else "—" for s in record["seeds"]]
            lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {shown(row['mean'])} | "
                         f"{shown(row['min'])}–{shown(row['max'])} | {shown(row['sd'])} |")
        lines.append("")
    return "\n".join(lines)


def write_results_section(markdown: str, path: Path = RESULTS) -> None:
    """Put ``markdown`` between the seeds markers of ``path`` (after its first section when there are none)."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    block = f"{MARKERS[0]}\n{markdown.rstrip()}\n{MARKERS[1]}"
    if MARKERS[0] in text and MARKERS[1] in text:
        head, rest = text.split(MARKERS[0], 1)
        text = head + block + rest.split(MARKERS[1], 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def run_seeds(chapters: list[str], seeds: list[int], preset: str = "tiny", root: Path | None = None,
              results: Path = RESULTS, record_path: Path = SEEDS_JSON, page: Path | None = PAGE) -> dict:
    """Run every chapter for every seed (chapter by chapter, in book order) and write the three records."""
    unknown = [c for c in chapters if c not in CHAPTERS]
    if unknown:
        raise ValueError(f"unknown chapter(s) {unknown}: choose from {list(CHAPTERS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds} must be distinct, e.g. 0,1,2")
    root = Path(root or ROOT / "outputs" / "seeds" / preset)
    record = {"preset": preset, "seeds": list(seeds), "machine": machine(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "chapters": {}}
    for chapter in sorted(chapters, key=CHAPTERS.index):
        tic = time.perf_counter()
        per_seed = {}
        for seed in seeds:
            out = run_chapter(chapter, seed, preset, root)
            per_seed[seed] = headline_numbers(json.loads((out / "metrics.json").read_text()))
        record["chapters"][chapter] = {"minutes": (time.perf_counter() - tic) / 60, "numbers": summarise(per_seed)}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    markdown = to_markdown(record)
    write_results_section(markdown, results)
    if page is not None:
        page.write_text("# Results over seeds\n\nEach chapter states the numbers of the run it sits in. How much "
                        "those numbers move from one seed to the next is measured here: every chapter's run, "
                        "repeated with other seeds on one machine.\n\n" + markdown.split("\n", 1)[1])
    return record


def seed_spread(chapter: str, name: str, path: Path = SEEDS_JSON) -> dict | None:
    """The recorded spread of ``name`` in ``chapter`` from the latest seeds run (None when there is none)."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    row = record.get("chapters", {}).get(chapter, {}).get("numbers", {}).get(name)
    return None if row is None else {**row, "seeds": record["seeds"], "date": record["date"],
                                     "preset": record["preset"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", default=",".join(CHAPTERS), help="comma-separated chapter names (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--output-dir", default=None, help="default outputs/seeds/<preset>")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds={args.seeds!r} must be comma-separated integers, e.g. 0,1,2")
    record = run_seeds([c.strip() for c in args.chapters.split(",") if c.strip()], seeds, args.preset,
                       Path(args.output_dir) if args.output_dir else None)
    print(to_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
