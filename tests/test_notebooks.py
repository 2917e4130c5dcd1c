"""Static checks of every chapter: committed without outputs, one parameters cell, no library code inside."""
import ast
import json
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
