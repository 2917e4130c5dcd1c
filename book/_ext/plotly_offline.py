"""Sphinx extension: serve the installed plotly.min.js from ``_static`` so figures render offline.

``reasoning_lib.viz`` emits figure HTML that calls ``Plotly.newPlot`` without bundling plotly.js; this adds
the library once per page (early, before any require.js that would capture it as an AMD module) and copies
the file from the installed ``plotly`` package, so its version always matches the one that made the figures.
"""
import shutil
from pathlib import Path

import plotly

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _copy_plotly(app, exception):
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "plotly.min.js"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PLOTLY_JS, target)


def setup(app):
    app.add_js_file("plotly.min.js", priority=100)
    app.connect("build-finished", _copy_plotly)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
