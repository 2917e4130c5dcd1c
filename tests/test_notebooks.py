"""Static checks of every chapter: committed without outputs, one parameters cell, no library code inside, and no
run result typed into the prose."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED_PARAMETERS = {"preset", "output_dir", "seed", "device"}
TRAINING_CALLS = {"backward", "zero_grad", "clip_grad_norm_"}


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _code(path):
    return "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    dirty = [i for i, c in enumerate(_cells(path)) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
    assert not dirty, f"cells {dirty} of {path.name} carry outputs: strip them before committing"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_exactly_one_parameters_cell_with_the_conventions(path):
    cells = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name} has {len(cells)} cells tagged 'parameters'; papermill needs exactly one"
    tree = ast.parse("".join(cells[0]["source"]))
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert REQUIRED_PARAMETERS <= names, f"missing parameters {REQUIRED_PARAMETERS - names}"
    values = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert ast.literal_eval(values["preset"]) == "tiny", "the book's default preset is 'tiny'"
    assert all(isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) for node in tree.body), \
        "the parameters cell holds plain literals only (no derived values)"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_model_or_training_loop_lives_in_a_chapter(path):
    tree = ast.parse(_code(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            assert not any("Module" in b for b in bases), f"{path.name} defines nn.Module {node.name}: move it to reasoning_lib"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in TRAINING_CALLS, f"{path.name} calls .{node.func.attr}(): training belongs in reasoning_lib"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_ends_with_the_full_scale_command(path):
    text = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    assert f"papermill notebooks/{path.name}" in text and "-p preset paper" in text


# Numbers the prose of a chapter (or of the book's intro) may state: the papers' published figures where they are
# cited, settings written as decimals, and constants. Anything a run measures is rendered from the run instead (a
# summary cell), so the text cannot disagree with the results. Each entry: the number as written, where it is from.
RESOURCE_PLAN = {"35%": "the resource plan's assumed model-FLOPs utilisation (reasoning_lib.resources.plan)"}
DENG_TABLE_2 = {  # Deng et al. 2023, Table 2: exact match / examples per second at batch size 1
    "28.7%": "no CoT, GPT-2 small, 4×4", "13.2": "its throughput", "96.6%": "implicit CoT, GPT-2 small, 4×4",
    "8.9": "its throughput", "2.3": "explicit CoT's throughput, GPT-2 small, 4×4", "100%": "explicit CoT, 4×4",
}
ALLOWED = {
    "01_multiplication_baselines.ipynb": {
        "100%": DENG_TABLE_2["100%"], "28.7%": DENG_TABLE_2["28.7%"], **RESOURCE_PLAN},
    "02_implicit_cot.ipynb": {
        "3.9": "Deng et al. 2023, Table 2: implicit over explicit CoT's throughput on 4×4 (8.9 / 2.3)",
        "8.9": DENG_TABLE_2["8.9"], "2.3": DENG_TABLE_2["2.3"], "96.6%": DENG_TABLE_2["96.6%"], **RESOURCE_PLAN},
    "03_discrete_diffusion.ipynb": {
        "169.6": "SEDD-small's parameter count in millions at the paper's shapes (tests/test_sedd_model.py)",
        "0.9999": "the paper's EMA decay (a setting)",
        "41.84": "Lou et al. 2024, Table 1: SEDD-small's WikiText-2 perplexity bound",
        "42.43": "the same table: GPT-2 small's"},
    "04_diffusion_of_thoughts.ipynb": {
        "0.9999": "the reference's EMA decay (a setting)", "32.6%": "Ye et al. 2024: Plaid DoT on GSM8K"},
    "05_knowledge_capacity.ipynb": {
        "3.3": "the paper's title, Physics of Language Models, Part 3.3",
        "0.66": "observed vs generating support of a uniform relation, -log2(1 - 1/e) (reasoning_lib.capacity.entropy)",
        "0.1": "the reference's weight decay (a setting)"},
    "06_probing_multihop.ipynb": {
        "10%": "the reference's held-out fraction of 2-hop tuples (a setting)",
        "0.1": "the reference's hop ratio (a setting)",
        "1.5": "the reference's model sizes then (≤1.5M parameters), as it reports them"},
    "07_causal_distillation.ipynb": {
        "0–3%": "the reference's finding on SST-2: how often swapping activations changes the teacher",
        "30%": "the share of positions an intervention swaps (a setting, reasoning_lib.distill)",
        "10%": "the reference's warm-up fraction (a setting)",
        "77.14": "the reference repository's GLUE average with the intervention term",
        "75.80": "the same, without it",
        # the reference repository's SST-2 dev accuracies, KD then DIITO + KD, at 500 / 1K / 10K / all examples
        **dict.fromkeys(["78.8", "81.3", "87.6", "91.2", "79.0", "83.6", "88.2", "90.8"],
                        "the reference repository's Distillation-Effects.ipynb, quoted in a table")},
    "08_reasoning_frontier.ipynb": {
        # Deng et al. 2023, Table 2, quoted whole (4×4 / 5×5 / GSM8K for each method)
        **dict.fromkeys(["28.7%", "13.2", "1.2%", "11.1", "13.3%", "24.7", "96.6%", "8.9", "9.5%", "8.7", "20.0%",
                         "16.4", "96.1%", "4.8", "96.4%", "4.6", "21.9%", "100.0%", "2.3", "1.5", "40.7%", "2.0"],
                        "Deng et al. 2023, Table 2, quoted in a table"),
        "100%": "Ye et al. 2024: DoT on 4×4 and 5×5", "32.6%": "Ye et al. 2024: Plaid DoT on GSM8K", **RESOURCE_PLAN},
    "intro.md": {
        **{k: DENG_TABLE_2[k] for k in ("100%", "28.7%", "96.6%", "8.9", "2.3", "13.2")},
        "41.84": "Lou et al. 2024, Table 1: SEDD-small's WikiText-2 perplexity bound", "42.43": "the same: GPT-2 small's",
        "32.6%": "Ye et al. 2024: Plaid DoT on GSM8K", "3.11": "the Python version the book needs"},
}
# Code blocks, inline code and LaTeX math are exempt, as is the level of the book's intervals.
EXEMPT = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|95%\s+(?:Wilson\s+)?intervals?", re.S)
# A percentage (or a range of them, 10–40%) or a decimal number; not a version or section number such as 2.13.0.
NUMBER = re.compile(r"(?<![\w.,])\d+(?:\.\d+)?(?:[–-]\d+(?:\.\d+)?)?%|(?<![\w.,])\d+\.\d+(?!\d|\.\d)")
PROSE = CHAPTERS + [ROOT / "book" / "intro.md"]


def _prose(path):
    """(cell index, text) of a notebook's markdown cells, or (0, text) of a markdown file."""
    if path.suffix == ".md":
        return [(0, path.read_text())]
    return [(i, "".join(c["source"])) for i, c in enumerate(_cells(path)) if c["cell_type"] == "markdown"]


def stated_numbers(text):
    """The percentages and decimal numbers of a markdown text, outside code and math."""
    return NUMBER.findall(EXEMPT.sub(" ", text))


def test_stated_numbers_finds_percentages_and_decimals_outside_code_and_math():
    text = ("reached 40.2%, 0.66 bits, 10–40% of digits, a 95% Wilson\ninterval, `lr 0.5`, $p = 0.3$, torch 2.13.0,\n"
            "```bash\npython -m x --mfu 0.35\n```\nabout 0.8M parameters, 1,094 steps and a speed-up of 1.7.")
    assert stated_numbers(text) == ["40.2%", "0.66", "10–40%", "0.8", "1.7"]


@pytest.mark.parametrize("path", PROSE, ids=lambda p: p.stem)
def test_prose_states_no_run_result(path):
    """A percentage or decimal number in a chapter's markdown (or the intro's) must be a cited constant of the
    allow-list above; a run's results are rendered from the run by a summary cell. Numbers inside LaTeX math
    ($...$), inline code (`...`) and code blocks are exempt, as is the "95%" of "95% Wilson interval"."""
    allowed = ALLOWED.get(path.name, {})
    stray = [(i, number) for i, text in _prose(path) for number in stated_numbers(text) if number not in allowed]
    where = "markdown cell {}" if path.suffix == ".ipynb" else "the text"
    assert not stray, "".join(f"\n{path.name}, {where.format(i)}: {number!r} is not rendered from the run; state it in "
                              "the chapter's summary cell, or cite it and add it to ALLOWED" for i, number in stray)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_every_allowed_number_is_still_stated(name):
    """An allow-list entry that the prose no longer states is stale: remove it."""
    path = ROOT / "book" / name if name.endswith(".md") else ROOT / "notebooks" / name
    stated = {number for _, text in _prose(path) for number in stated_numbers(text)}
    assert set(ALLOWED[name]) <= stated, f"ALLOWED[{name!r}] lists {sorted(set(ALLOWED[name]) - stated)}, not stated"


# A chapter holds narrative, its parameters cell, one import cell right after it, calls into reasoning_lib and
# plots: a helper function, a class or a stopwatch in a cell is library code (reasoning_lib, with its tests), and
# an import further down hides what the chapter depends on.
CLOCKS = {("time", "time"), ("time", "time_ns"), ("time", "perf_counter"), ("time", "perf_counter_ns"),
          ("time", "monotonic"), ("time", "monotonic_ns"), ("time", "process_time"), ("datetime", "now"),
          ("datetime", "utcnow"), ("datetime", "today")}
BARE_CLOCKS = {"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "process_time"}


def _clock(node):
    """``time.perf_counter``, ``datetime.datetime.now``, a bare ``perf_counter``: the clock a node reads, or None."""
    if isinstance(node, ast.Attribute):
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        return f"{owner}.{node.attr}" if (owner, node.attr) in CLOCKS else None
    if isinstance(node, ast.Name) and node.id in BARE_CLOCKS and isinstance(node.ctx, ast.Load):
        return node.id
    return None


def style_offences(cells):
    """(cell index, line, what is wrong) for every function or class definition, clock read and import outside
    the import cell (the first code cell after the one tagged ``parameters``) of a notebook's cells."""
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    tagged = [i for i in code if "parameters" in cells[i].get("metadata", {}).get("tags", [])]
    import_cell = next((i for i in code if tagged and i > tagged[0]), None)
    offences = []
    for i in code:
        source = "".join(cells[i]["source"])
        lines = source.splitlines()
        # IPython magics are not Python: a %time / %%timeit is a clock, other magics are blanked to keep line numbers
        offences += [(i, n, line.strip(), "times code (a clock)")
                     for n, line in enumerate(lines, start=1) if re.match(r"\s*%%?time", line)]
        tree = ast.parse("\n".join("" if re.match(r"\s*[%!]", line) else line for line in lines))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                what = f"defines {'class' if isinstance(node, ast.ClassDef) else 'function'} {node.name}"
            elif _clock(node):
                what = f"reads the clock {_clock(node)}"
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and i != import_cell:
                what = f"imports outside the import cell (cell {import_cell})"
            else:
                continue
            offences.append((i, node.lineno, lines[node.lineno - 1].strip(), what))
    return [(i, line, what) for i, _, line, what in sorted(offences)]


def test_style_offences_names_cell_line_and_reason():
    cells = [{"cell_type": "markdown", "source": ["# A chapter"]},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ["preset = 'tiny'"]},
             {"cell_type": "code", "metadata": {}, "source": ["import time\n", "from x import y\n", "f = lambda z: z\n"]},
             {"cell_type": "code", "metadata": {}, "source": [
                 "if y:\n", "    from x import z\n", "    def helper(a):\n", "        return a\n",
                 "started = time.perf_counter()\n", "class Box:\n", "    pass\n", "%timeit y()\n", "!ls\n"]},
             {"cell_type": "code", "metadata": {}, "source": ["import datetime\n", "now = datetime.datetime.now()"]}]
    assert style_offences(cells) == [
        (3, "from x import z", "imports outside the import cell (cell 2)"),
        (3, "def helper(a):", "defines function helper"),
        (3, "started = time.perf_counter()", "reads the clock time.perf_counter"),
        (3, "class Box:", "defines class Box"),
        (3, "%timeit y()", "times code (a clock)"),
        (4, "import datetime", "imports outside the import cell (cell 2)"),
        (4, "now = datetime.datetime.now()", "reads the clock datetime.now"),
    ]


@pytest.mark.parametrize("path", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_chapter_defines_no_function_reads_no_clock_and_imports_once(path):
    """Function and class definitions, timing and imports belong in reasoning_lib or the chapter's import cell:
    a cell defines nothing (a lambda passed to a call is fine), reads no clock, and imports nothing."""
    offences = style_offences(_cells(path))
    assert not offences, "".join(f"\n{path.name}, cell {i}: {what}: {line!r}" for i, line, what in offences) + (
        "\nmove helpers and timing into reasoning_lib, and every import into the cell after the parameters cell")
