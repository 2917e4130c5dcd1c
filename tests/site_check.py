"""Open built book pages in headless Chromium: count rendered plotly figures and save screenshots.

Usage: ``python tests/site_check.py _build/html [notebooks/01_multiplication_baselines ...]``
(``make check-site`` runs it on the real book). Exits non-zero when a page has no rendered figure.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _chromium(args: list[str], timeout: int = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [find_chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran."""
    return _chromium(["--dump-dom", page.resolve().as_uri()])


def figure_counts(page: Path) -> tuple[int, int]:
    """(plotly figure divs in the HTML, figures that plotly.js actually drew as SVG)."""
    html = page.read_text(encoding="utf-8")
    divs = len(re.findall(r'class="plotly-graph-div"', html))
    dom = rendered_dom(page)
    plotted = len(re.findall(r'class="[^"]*plotly-graph-div[^"]*js-plotly-plot', dom))  # class plotly.js adds
    drawn = min(plotted, len(re.findall(r'<svg class="main-svg"', dom)) // 2)  # every drawn figure has >= 2 svg layers
    return divs, drawn


def screenshot(page: Path, target: Path, height: int = 5200) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    _chromium([f"--screenshot={target.resolve()}", f"--window-size=1280,{height}", page.resolve().as_uri()])
    return target


def main(argv: list[str]) -> int:
    html_dir = Path(argv[0]) if argv else Path("_build/html")
    pages = argv[1:] or [p.relative_to(html_dir).with_suffix("").as_posix() for p in sorted(html_dir.glob("notebooks/*.html"))]
    if find_chromium() is None:
        print("chromium not found: install it with `apt-get install -y chromium` (make chromium)")
        return 2
    failed = False
    for name in pages:
        page = html_dir / f"{name}.html"
        divs, drawn = figure_counts(page)
        shot = screenshot(page, Path("_build/screenshots") / f"{Path(name).name}.png")
        ok = divs > 0 and drawn >= divs
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {drawn}/{divs} plotly figures drawn; screenshot {shot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
