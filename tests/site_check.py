"""Open built book pages in headless Chromium (driven by Playwright): check that every plotly figure was drawn,
that every plotly slider (the denoising chains) moves when a user drags and clicks it, and save screenshots.

Usage: ``python tests/site_check.py _build/html [notebooks/01_multiplication_baselines ...]``
(``make check-site`` runs it on the real book). Prints, per page, figures drawn/total, sliders moved/total and
the screenshot's path; exits non-zero when a page has no figure, an undrawn figure or a slider that did not move.

Playwright drives the system Chromium (``find_chromium()``, e.g. Debian's ``/usr/bin/chromium``) through
``executable_path``: its own browser download (``playwright install``) is neither needed nor used.
"""
from __future__ import annotations

import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# `--headless` itself is added by Playwright (headless=True).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars"]
VIEWPORT = {"width": 1280, "height": 900}
DRAW_TIMEOUT_MS = 30_000  # for plotly.js to draw every figure of a page
MOVE_TIMEOUT_MS = 5_000  # for a slider to show its new step after a drag or click
SCREENSHOTS = Path("_build/screenshots")

# Figures plotly.js drew: the class it adds to a figure div, plus the SVG layers it draws into it.
_DRAWN_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div'))
    .filter(gd => gd.classList.contains('js-plotly-plot') && gd.querySelector('svg.main-svg')).length"""
_DIVS_JS = "() => document.querySelectorAll('.plotly-graph-div').length"
# What a figure with a slider displays now: the slider's active step (plotly's state), the current-value text
# drawn above the slider, and the text drawn by the traces (the tokens of a denoising chain).
_STATE_JS = """gd => {
    const sliders = (gd._fullLayout && gd._fullLayout.sliders) || [];
    // the current value is the slider group's own label (the step labels under the rail sit in .slider-labels)
    const label = gd.querySelector('.slider-container .slider-current-value')
        || gd.querySelector('.slider-container .slider-group > text.slider-label');
    const drawn = Array.from(gd.querySelectorAll('.cartesianlayer .trace text, .cartesianlayer .trace path'))
        .map(el => el.textContent || el.getAttribute('d') || '').join('|');
    return {active: sliders.length ? sliders[0].active : null, label: label ? label.textContent : null, drawn: drawn};
}"""
# A figure is idle when no animation (the play button, or plotly's auto-play on load) is queued or running.
_IDLE_JS = """gd => { const t = gd._transitionData || {};
    return !gd._transitioning && !t._animationRaf && !(t._frameQueue && t._frameQueue.length); }"""


@dataclass
class SliderCheck:
    """One slider, read on load and after each real mouse interaction: its grip dragged to the far end of the rail,
    then a click on the rail's other end."""
    figure: int  # index of the figure among the page's plotly figures
    steps: int
    readings: list[dict] = field(default_factory=list)  # {"after": str, "active": int, "label": str, "drawn": str}
    error: str | None = None
    autoplayed: bool = False  # the figure was still animating after load (plotly's auto_play): stopped first

    def _changed(self, i: int) -> bool:
        before, after = self.readings[i - 1], self.readings[i]
        return (before["active"] != after["active"] and before["label"] != after["label"]
                and before["drawn"] != after["drawn"])

    @property
    def moved(self) -> bool:
        """Every interaction changed the active step, the displayed step label and the drawn tokens."""
        return self.error is None and len(self.readings) >= 2 and all(
            self._changed(i) for i in range(1, len(self.readings)))

    def describe(self) -> str:
        steps = " -> ".join(f"{r['label']!r} (active {r['active']}, after {r['after']})" for r in self.readings)
        if self.error:
            return f"figure {self.figure}: {self.error}; {steps}"
        unchanged = [self.readings[i]["after"] for i in range(1, len(self.readings)) if not self._changed(i)]
        status = "moved" if self.moved else f"DID NOT MOVE on {', '.join(unchanged) or 'any interaction'}"
        note = "; was auto-playing on load, stopped before the check" if self.autoplayed else ""
        return f"figure {self.figure} ({self.steps} steps) {status}: {steps}{note}"


@dataclass
class PageCheck:
    page: Path
    divs: int  # plotly figure divs in the page's HTML
    drawn: int  # figures plotly.js drew in the browser
    sliders: list[SliderCheck]
    screenshot: Path | None
    errors: list[str]  # uncaught JavaScript errors on the page

    @property
    def sliders_moved(self) -> int:
        return sum(s.moved for s in self.sliders)

    @property
    def ok(self) -> bool:
        return self.divs > 0 and self.drawn >= self.divs and self.sliders_moved == len(self.sliders)

    def summary(self) -> str:
        return (f"{self.drawn}/{self.divs} plotly figures drawn; {self.sliders_moved}/{len(self.sliders)} sliders "
                f"moved; screenshot {self.screenshot}")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@contextmanager
def browser() -> Iterator:
    """A headless Playwright browser on the system Chromium; pages only reach file:// URLs (the book is offline)."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("chromium not found: install it with `apt-get install -y chromium` (make chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(chromium, page_path: Path):
    context = chromium.new_context(viewport=VIEWPORT)
    context.route(re.compile(r"^(https?|wss?)://"), lambda route: route.abort())
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=60_000)
    return context, page, errors


def _state(figure) -> dict:
    return figure.evaluate(_STATE_JS)


def _wait_for_change(page, figure, before: dict) -> None:
    """Wait (up to MOVE_TIMEOUT_MS) until the figure shows another step than ``before``; no error on timeout."""
    handle = figure.element_handle()
    try:
        page.wait_for_function(
            f"([gd, before]) => {{ const now = ({_STATE_JS})(gd); return now.active !== before.active"
            " && now.label !== before.label && now.drawn !== before.drawn; }",
            arg=[handle, before], timeout=MOVE_TIMEOUT_MS, polling=50)
    except Exception:  # playwright's TimeoutError: the caller compares the readings and reports
        pass
    page.wait_for_timeout(100)  # let a transition settle before the next reading


def _box(locator) -> dict:
    box = locator.bounding_box()
    if box is None:
        raise RuntimeError("slider element is not visible")
    return box


def _stop_animation(page, figure) -> bool:
    """Wait for the figure to be idle; a figure still animating (auto-play on load) is stopped. True if it was."""
    try:
        page.wait_for_function(_IDLE_JS, arg=figure.element_handle(), timeout=2_000, polling=50)
        return False
    except Exception:  # still playing: stop it as the pause button would, then wait for the last transition
        figure.evaluate("gd => Plotly.animate(gd, [null], {mode: 'immediate', frame: {duration: 0},"
                        " transition: {duration: 0}})")
        page.wait_for_function(_IDLE_JS, arg=figure.element_handle(), timeout=MOVE_TIMEOUT_MS, polling=50)
        page.wait_for_timeout(100)
        return True


def check_slider(page, figure, index: int, interact: bool = True) -> SliderCheck:
    """Read a figure's displayed step, drag the slider's grip with the mouse to the far end of its rail, read
    again, click the other end of the rail, read again. ``interact=False`` only reads (to show the check fails)."""
    steps = figure.evaluate("gd => gd._fullLayout.sliders[0].steps.filter(s => s.visible !== false).length")
    check = SliderCheck(figure=index, steps=steps)
    try:
        container = figure.locator(".slider-container").first
        container.scroll_into_view_if_needed()
        check.autoplayed = _stop_animation(page, figure)
        check.readings.append({"after": "load", **_state(figure)})
        rail = _box(container.locator(".slider-rail-rect").first)
        grip = _box(container.locator(".slider-grip-rect").first)
        y = rail["y"] + rail["height"] / 2
        left, right = rail["x"] + 1, rail["x"] + rail["width"] - 1
        to_right = (check.readings[-1]["active"] or 0) <= (steps - 1) / 2
        far, near = (right, left) if to_right else (left, right)
        # 1. drag the grip to the far end of the rail
        if interact:
            page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
            page.mouse.down()
            page.mouse.move(far, y, steps=12)
            page.mouse.up()
        _wait_for_change(page, figure, check.readings[-1])
        check.readings.append({"after": f"drag {'right' if to_right else 'left'}", **_state(figure)})
        # 2. click the other end of the rail
        if interact:
            page.mouse.click(near, y)
        _wait_for_change(page, figure, check.readings[-1])
        check.readings.append({"after": f"click rail {'start' if to_right else 'end'}", **_state(figure)})
    except Exception as err:  # report, don't crash the whole page check
        check.error = f"{type(err).__name__}: {err}".splitlines()[0]
    return check


def check_page(chromium, page_path: Path, screenshot_to: Path | None = None, interact: bool = True) -> PageCheck:
    """Open a built page: count figures in its HTML and drawn ones, move every slider, then save a full-page
    screenshot (sliders show the step the last click chose)."""
    page_path = Path(page_path)
    divs = len(re.findall(r'class="plotly-graph-div"', page_path.read_text(encoding="utf-8")))
    context, page, errors = _open(chromium, page_path)
    try:
        try:
            page.wait_for_function(f"() => ({_DRAWN_JS})() >= ({_DIVS_JS})()", timeout=DRAW_TIMEOUT_MS)
        except Exception:  # not every figure drew: reported through the counts
            pass
        drawn = page.evaluate(_DRAWN_JS)
        figures = page.locator(".plotly-graph-div.js-plotly-plot")
        has_slider = figures.evaluate_all("gds => gds.map(gd => !!(gd._fullLayout && gd._fullLayout.sliders"
                                          " && gd._fullLayout.sliders.length))")
        sliders = [check_slider(page, figures.nth(i), i, interact) for i, yes in enumerate(has_slider) if yes]
        shot = None
        if screenshot_to is not None:
            screenshot_to = Path(screenshot_to)
            screenshot_to.parent.mkdir(parents=True, exist_ok=True)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(screenshot_to), full_page=True)
            shot = screenshot_to
        return PageCheck(page_path, divs, drawn, sliders, shot, errors)
    finally:
        context.close()


def figure_counts(page: Path) -> tuple[int, int]:
    """(plotly figure divs in the HTML, figures that plotly.js actually drew as SVG)."""
    with browser() as chromium:
        result = check_page(chromium, page)
    return result.divs, result.drawn


def screenshot(page: Path, target: Path) -> Path:
    """A full-page screenshot of a built page, after its figures were drawn."""
    with browser() as chromium:
        check_page(chromium, page, target)
    return Path(target)


def main(argv: list[str]) -> int:
    interact = "--no-interact" not in argv  # only to show that the slider check fails without a user
    argv = [a for a in argv if a != "--no-interact"]
    html_dir = Path(argv[0]) if argv else Path("_build/html")
    pages = argv[1:] or [p.relative_to(html_dir).with_suffix("").as_posix() for p in sorted(html_dir.glob("notebooks/*.html"))]
    if find_chromium() is None:
        print("chromium not found: install it with `apt-get install -y chromium` (make chromium)")
        return 2
    if not pages:
        print(f"no pages under {html_dir}/notebooks: build the book first (make book)")
        return 1
    failed = False
    with browser() as chromium:
        for name in pages:
            page = html_dir / f"{name}.html"
            if not page.is_file():
                failed = True
                print(f"FAIL {name}: no page {page}")
                continue
            result = check_page(chromium, page, SCREENSHOTS / f"{Path(name).name}.png", interact)
            failed |= not result.ok
            print(f"{'ok  ' if result.ok else 'FAIL'} {name}: {result.summary()}")
            for slider in result.sliders:
                print(f"       slider {slider.describe()}")
            for error in result.errors:
                print(f"       JavaScript error: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
