"""Every chapter executed with papermill at the smoke preset, the book built from those runs, and the
pages opened in a real browser."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
import yaml

from site_check import browser, check_page, find_chromium

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED_METRICS = {
    "01_multiplication_baselines": ["no_cot.accuracy", "no_cot.throughput", "explicit_cot.accuracy", "explicit_cot.throughput"],
    "02_implicit_cot": ["no_cot.accuracy", "no_cot.throughput", "explicit_cot.accuracy", "explicit_cot.throughput",
                        "implicit_cot.accuracy", "implicit_cot.throughput"],
    "03_discrete_diffusion": [f"{g}.{key}" for g in ("absorb", "uniform")
                              for key in ("elbo_perplexity", "elbo_stderr", "train_loss_final")] + ["sample_steps_per_second", "nfe"],
    "04_diffusion_of_thoughts": ["dot.accuracy", "dot.throughput", "dot_mp.accuracy", "dot_mp.throughput"],
    "07_causal_distillation": ["teacher.accuracy", "kd.accuracy", "diito.accuracy", "kd.iia", "diito.iia"],
}
EXPECTED_METRICS["08_reasoning_frontier"] = [  # the smoke sweep: one task, all seven methods
    f"2x2.{method}.{key}" for method in ("no_cot", "explicit_cot", "implicit_cot", "dot", "dot_mp", "dot_sc", "dot_mp_sc")
    for key in ("accuracy", "examples_per_s", "examples_per_s_batched")]
NESTED_METRICS = {"07_causal_distillation": ["accuracy_vs_train_size"]}  # {method: {size: accuracy}}
# {name: number} per scheme / per model size; entropies are positive, capacity may be negative before convergence
PER_NAME = {"05_knowledge_capacity": {"dataset_entropy_bits": "positive", "capacity_bits": "finite",
                                      "bits_per_param": "finite"}}
GRIDS = {"06_probing_multihop": {"probe_accuracy": list, "model_accuracy": dict}}  # layer x position, per split
PER_LAYER = {"02_implicit_cot": "emulator.state_mse_per_layer"}  # one value >= 0 per layer
CURVES = {"04_diffusion_of_thoughts": {"accuracy_vs_steps": dict, "self_consistency.accuracy_at_k": list}}


# A smoke cell takes seconds; once in a CI run a kernel went silent after a widget cell (idle, its reply never
# arrived) and papermill, which waits forever by default, hung the run. Such a cell now fails after this long and
# the chapter is run once more.
CELL_TIMEOUT_S = 240  # the slowest smoke cell (the capstone's sweep) takes about a minute


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """A copy of the book whose chapters were executed at the smoke preset, configured not to re-execute."""
    book = tmp_path_factory.mktemp("smoke_book")
    for name in ("_toc.yml", "book"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, book / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "notebooks").mkdir()
    errors = {}
    for path in CHAPTERS:
        for attempt in (1, 2):
            try:
                papermill.execute_notebook(
                    str(path), str(book / "notebooks" / path.name), cwd=str(book / "notebooks"), kernel_name="python3",
                    parameters={"preset": "smoke", "output_dir": str(book / "outputs" / path.stem)}, progress_bar=False,
                    execution_timeout=CELL_TIMEOUT_S,
                )
                errors.pop(path.stem, None)
                break
            except papermill.PapermillExecutionError as err:
                errors[path.stem] = f"{err.ename}: {err.evalue}"
                break
            except TimeoutError as err:  # a smoke cell takes seconds: a kernel that went silent, not slow code
                errors[path.stem] = f"a cell got no reply within {CELL_TIMEOUT_S} s (attempt {attempt} of 2): {err}"
    return book, errors


@pytest.mark.notebook
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_at_smoke_preset_and_writes_metrics(smoke_book, path):
    book, errors = smoke_book
    assert path.stem not in errors, f"{path.name} failed: {errors.get(path.stem)} (see the executed copy in {book})"
    metrics = json.loads((book / "outputs" / path.stem / "metrics.json").read_text())
    for key in EXPECTED_METRICS.get(path.stem, []):
        assert key in metrics, f"metrics.json of {path.stem} lacks {key!r}"
        assert isinstance(metrics[key], (int, float))
    for key in NESTED_METRICS.get(path.stem, []):
        assert isinstance(metrics.get(key), dict) and metrics[key], f"metrics.json of {path.stem} lacks {key!r}"
        for per_size in metrics[key].values():
            assert all(0 <= v <= 1 for v in per_size.values())
    for key, kind in CURVES.get(path.stem, {}).items():
        assert isinstance(metrics.get(key), kind) and metrics[key], f"metrics.json of {path.stem} lacks {key!r}"
        values = metrics[key].values() if kind is dict else metrics[key]
        assert all(0 <= v <= 1 for v in values)
    for key, kind in GRIDS.get(path.stem, {}).items():
        values = metrics.get(key)
        assert isinstance(values, kind) and values, f"metrics.json of {path.stem} lacks {key!r}"
        cells = [v for row in values for v in row] if kind is list else list(values.values())
        assert cells and all(0 <= v <= 1 for v in cells), f"{key} of {path.stem} holds values outside [0, 1]"
    for key, rule in PER_NAME.get(path.stem, {}).items():
        values = metrics.get(key)
        assert isinstance(values, dict) and values, f"metrics.json of {path.stem} lacks {key!r}"
        assert all(isinstance(v, (int, float)) and (v > 0 if rule == "positive" else True) for v in values.values()), \
            f"bad {key} in {path.stem}: {values}"
    if path.stem in PER_NAME:
        assert metrics["capacity_bits"].keys() == metrics["bits_per_param"].keys(), "one entry per model size"
    if path.stem in PER_LAYER:
        values = metrics.get(PER_LAYER[path.stem])
        assert isinstance(values, list) and values and all(v >= 0 for v in values), f"bad {PER_LAYER[path.stem]}: {values}"


@pytest.fixture(scope="session")
def built_book(smoke_book):
    book, errors = smoke_book
    if errors:
        pytest.skip(f"chapters failed to execute: {sorted(errors)}")
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(book), "-W", "--keep-going"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"jupyter-book build failed or warned:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return book / "_build" / "html"


@pytest.mark.notebook
def test_book_builds_with_warnings_as_errors(built_book):
    for path in CHAPTERS:
        assert (built_book / "notebooks" / f"{path.stem}.html").is_file()
    assert (built_book / "_static" / "plotly.min.js").is_file(), "plotly.js must be served locally (offline book)"


SLIDER_CHAPTERS = {"03_discrete_diffusion", "04_diffusion_of_thoughts"}  # chapters showing denoising chains


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium (driven by Playwright) for every browser test; skips when none is installed."""
    missing = "chromium is not installed (make chromium)" if find_chromium() is None else None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = missing or "the playwright package is not installed (make install)"
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with browser() as chromium:
        yield chromium


@pytest.mark.browser
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_figures_render_in_a_real_browser(built_book, chromium, path):
    page = built_book / "notebooks" / f"{path.stem}.html"
    result = check_page(chromium, page, ROOT / "_build" / "screenshots" / f"smoke-{path.stem}.png")
    assert result.divs > 0, f"{path.stem} has no plotly figure in its HTML: is reasoning_lib.viz imported?"
    assert result.drawn >= result.divs, (f"only {result.drawn} of {result.divs} figures drawn: is plotly.min.js "
                                         f"loaded before the figures? JavaScript errors: {result.errors}")
    if path.stem in SLIDER_CHAPTERS:
        assert result.sliders, f"{path.stem} shows no figure with a slider: where is the denoising chain?"
        stuck = [s.describe() for s in result.sliders if not s.moved]
        assert not stuck, "slider did not follow the mouse:\n" + "\n".join(stuck)


@pytest.mark.browser
def test_slider_check_needs_a_real_interaction(chromium, tmp_path):
    """The checker itself, on a page with one denoising chain as wide as a book page (where the play buttons must
    not cover the grip): the slider moves when dragged and clicked, and
    the same check without the mouse reports it did not move (so a passing slider check means something)."""
    import plotly

    from reasoning_lib import viz

    chains = {"sample": [["▒"] * 4, ["a", "▒", "▒", "d"], ["a", "b", "c", "d"]]}
    fig = viz.token_chain(chains, ["t = 1.0", "t = 0.5", "t = 0.0"], "a chain")
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    page = tmp_path / "chain.html"
    page.write_text(f'<html><head><meta charset="utf-8"><script src="{plotly_js.as_uri()}"></script></head><body>'
                    f'<div style="width: 700px">{viz.BookRenderer().to_mimebundle(fig.to_dict())["text/html"]}</div>'
                    '</body></html>', encoding="utf-8")
    moved = check_page(chromium, page, tmp_path / "chain.png")
    assert (moved.divs, moved.drawn, len(moved.sliders)) == (1, 1, 1)
    assert moved.sliders[0].moved, moved.sliders[0].describe()
    start, dragged, clicked = (r["active"] for r in moved.sliders[0].readings)
    assert {dragged, clicked} == {0, 2}, f"drag and click should reach both ends: {moved.sliders[0].describe()}"
    still = check_page(chromium, page, interact=False)
    assert not still.sliders[0].moved, still.sliders[0].describe()
