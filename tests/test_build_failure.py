"""A chapter whose code raises fails the book build: `make book` cannot publish a page with a silently missing
output. A tiny book (an intro page and one notebook) is built with the repository's execution settings and the
same command as `make book`, once with a cell that raises and once with one that does not."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


def make_book(folder: Path, code: str) -> Path:
    """An intro page and a chapter notebook whose only code cell is ``code``; the repository's ``execute`` and
    ``nb_execution_*`` settings, without its bibliography and local extensions (files this book does not have)."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx_config = {k: v for k, v in repo["sphinx"]["config"].items() if not k.startswith("bibtex")}
    config = {"title": "Build failure check", "only_build_toc_files": True, "execute": repo["execute"],
              "sphinx": {"config": sphinx_config}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_config.yml").write_text(yaml.safe_dump(config))
    (folder / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro",
                                                     "chapters": [{"file": "chapter"}]}))
    (folder / "intro.md").write_text("# Intro\n\nA book with one chapter.\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Chapter"),
                                               nbformat.v4.new_code_cell(code)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "chapter.ipynb")
    return folder


def build(folder: Path) -> subprocess.CompletedProcess:
    """`make book`'s command on ``folder``."""
    return subprocess.run([str(JUPYTER_BOOK), "build", str(folder), "-W", "--keep-going"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.notebook
def test_chapter_that_raises_fails_the_build(tmp_path):
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())  # the settings this test relies on
    assert repo["execute"]["execute_notebooks"] != "off" and repo["execute"].get("allow_errors") is False
    assert repo["sphinx"]["config"].get("nb_execution_raise_on_error") is True
    run = build(make_book(tmp_path / "book", 'raise RuntimeError("boom")'))
    log = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)  # without terminal colours
    assert run.returncode != 0, f"the build passed although a cell raised:\n{log[-4000:]}"
    # The cell's own error and the failing notebook (jupyter-book's final message is a bare RuntimeError too).
    assert "RuntimeError: boom" in log, f"the build failed without reporting the cell's error:\n{log[-4000:]}"
    assert "chapter.ipynb" in log and "Executing notebook failed" in log, log[-4000:]


@pytest.mark.notebook
def test_same_book_builds_when_the_cell_runs(tmp_path):
    run = build(make_book(tmp_path / "book", 'print("no boom")'))
    assert run.returncode == 0, f"the control book failed to build:\n{(run.stdout + run.stderr)[-4000:]}"
    assert "no boom" in (tmp_path / "book" / "_build" / "html" / "chapter.html").read_text(encoding="utf-8")
