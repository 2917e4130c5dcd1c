"""Every figure of the book, built with plotly and displayed so that it shows up in the rendered book.

plotly >= 6 running under a kernel emits only its own mime type, which Jupyter Book 1 (myst-nb) drops, so the
page would show nothing. Importing this module sets the renderer to ``plotly_mimetype+book``: JupyterLab
draws the mime type; the book uses an HTML div whose script calls ``Plotly.newPlot``. plotly.js itself is
not inlined into every output: the book's ``plotly_offline`` extension serves the installed plotly.min.js
once, so pages stay small and work offline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer


class BookRenderer(MimetypeRenderer):
    """A figure as an HTML div and a ``Plotly.newPlot`` call: no plotly.js, no MathJax from a CDN."""

    def to_mimebundle(self, fig_dict):
        html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False, auto_play=False,
                           default_width="100%", default_height=525, validate=False)
        return {"text/html": html}


RENDERER = "plotly_mimetype+book"
pio.renderers["book"] = BookRenderer()
pio.renderers.default = RENDERER
pio.templates.default = "plotly_white"

METHOD_COLORS = {
    "no_cot": "#636EFA", "explicit_cot": "#EF553B", "implicit_cot": "#00CC96", "dot": "#AB63FA", "dot_mp": "#FFA15A",
    "teacher": "#7F7F7F", "kd": "#636EFA", "diito": "#EF553B", "answer_only": "#19D3F3",
    "dot_sc": "#7A3FC4", "dot_mp_sc": "#C46A1F",
}
METHOD_LABELS = {
    "no_cot": "No CoT", "explicit_cot": "Explicit CoT", "implicit_cot": "Implicit CoT", "dot": "DoT", "dot_mp": "DoT-MP",
    "teacher": "Teacher", "kd": "KD student", "diito": "DIITO student", "answer_only": "Diffusion, answer only",
    "dot_sc": "DoT + self-consistency", "dot_mp_sc": "DoT-MP + self-consistency",
    "released_implicit_cot": "Implicit CoT, the authors' checkpoints",  # chapter 2's released_dir
}


def label(method: str) -> str:
    """Display name of a method key (``'no_cot'`` → ``'No CoT'``)."""
    return METHOD_LABELS.get(method, method)


def loss_curves(histories: Mapping[str, list[dict]], title: str = "Training loss") -> go.Figure:
    """One line per run: loss (log scale) against optimizer step; ``histories`` maps a name to train() history."""
    fig = go.Figure()
    for name, history in histories.items():
        fig.add_trace(go.Scatter(
            x=[row["step"] for row in history], y=[row["loss"] for row in history], mode="lines",
            name=label(name), line={"color": METHOD_COLORS.get(name)},
        ))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="cross-entropy (nats/token)", height=380)
    fig.update_yaxes(type="log")
    return fig


def accuracy_vs_throughput(rows: Iterable[Mapping], title: str = "Accuracy vs throughput") -> go.Figure:
    """Scatter of ``accuracy`` against ``throughput`` (log x), one marker per row with a ``method`` key."""
    fig = go.Figure()
    for row in rows:
        fig.add_trace(go.Scatter(
            x=[row["throughput"]], y=[100 * row["accuracy"]], mode="markers+text", name=label(row["method"]),
            text=[label(row["method"])], textposition="top center",
            marker={"size": 14, "color": METHOD_COLORS.get(row["method"])},
            hovertemplate="%{text}<br>%{y:.1f}% exact match<br>%{x:.1f} examples/s<extra></extra>",
        ))
    fig.update_layout(title=title, xaxis_title="throughput at batch size 1 (examples/s, log scale)",
                      yaxis_title="exact-match accuracy (%)", height=420, showlegend=False)
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[-5, 108])
    return fig


def position_accuracy(per_method: Mapping[str, list[float]], title: str = "Which answer digits are right") -> go.Figure:
    """Grouped bars: accuracy of each answer digit (ones digit first), one group per method."""
    fig = go.Figure()
    for method, accuracies in per_method.items():
        fig.add_trace(go.Bar(
            x=[f"10^{i}" for i in range(len(accuracies))], y=[100 * a for a in accuracies], name=label(method),
            marker_color=METHOD_COLORS.get(method),
        ))
    fig.update_layout(title=title, barmode="group", xaxis_title="answer digit (place value, as written: ones first)",
                      yaxis_title="digit accuracy (%)", height=380)
    fig.update_yaxes(range=[0, 105])
    return fig


def diagonal_heatmap(positions: list[int], tokens: list[str], title: str = "Which CoT position each layer reads") -> go.Figure:
    """Layer (y) × sequence position (x) grid with a cell lit where layer l reads the teacher (``positions[l]``)."""
    grid = [[1 if positions[layer] == x else 0 for x in range(len(tokens))] for layer in range(len(positions))]
    fig = go.Figure(go.Heatmap(
        z=grid, x=list(range(len(tokens))), y=[f"layer {l}" for l in range(len(positions))], showscale=False,
        colorscale=[[0, "#f4f4f8"], [1, METHOD_COLORS["implicit_cot"]]], xgap=1, ygap=1,
        customdata=[tokens] * len(positions), hovertemplate="%{y}, position %{x}: %{customdata}<extra></extra>",
    ))
    fig.update_layout(title=title, height=120 + 28 * len(positions), xaxis_title="CoT token")
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(tokens))), ticktext=tokens, tickangle=0)
    return fig


def per_layer(values: list[float], title: str, yaxis_title: str) -> go.Figure:
    """One bar per layer (e.g. the emulator's squared error against the teacher's states)."""
    fig = go.Figure(go.Bar(x=[f"layer {l}" for l in range(len(values))], y=values, marker_color=METHOD_COLORS["implicit_cot"]))
    fig.update_layout(title=title, yaxis_title=yaxis_title, height=360)
    return fig


def metric_vs_size(per_method: Mapping[str, Mapping[int, float]], title: str, yaxis_title: str) -> go.Figure:
    """One line per method: a metric (fraction, shown in %) against training-set size (log x)."""
    fig = go.Figure()
    for method, values in per_method.items():
        sizes = sorted(values)
        fig.add_trace(go.Scatter(x=sizes, y=[100 * values[s] for s in sizes], mode="lines+markers", name=label(method),
                                 line={"color": METHOD_COLORS.get(method)}))
    fig.update_layout(title=title, xaxis_title="training examples (log scale)", yaxis_title=yaxis_title, height=400)
    fig.update_xaxes(type="log", tickvals=sorted({s for values in per_method.values() for s in values}))
    return fig


def layer_pair_heatmaps(matrices: Mapping[str, list[list[float]]], title: str) -> go.Figure:
    """Side-by-side heatmaps, one per method: rows student layers, columns teacher layers, cells in %."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(matrices), subplot_titles=[label(m) for m in matrices], horizontal_spacing=0.08)
    for col, matrix in enumerate(matrices.values(), start=1):
        z = [[round(100 * v, 1) for v in row] for row in matrix]
        fig.add_trace(go.Heatmap(
            z=z, x=[f"T{t}" for t in range(len(z[0]))], y=[f"S{s}" for s in range(len(z))], zmin=50, zmax=100,
            colorscale="Viridis", text=z, texttemplate="%{text}", showscale=col == len(matrices),
            colorbar={"title": "IIA (%)"}, hovertemplate="student %{y} vs teacher %{x}: %{z}%<extra></extra>",
        ), row=1, col=col)
    fig.update_layout(title=title, height=150 + 70 * len(next(iter(matrices.values()))))
    fig.update_xaxes(title_text="teacher layer")
    fig.update_yaxes(title_text="student layer", col=1)
    return fig


def interchange_diagram(base_tokens: list[str], source_tokens: list[str], num_layers: int, layer: int,
                        base_positions: list[int], source_positions: list[int],
                        title: str = "An interchange intervention") -> go.Figure:
    """The source run (left) and the base run (right) as grids of token x block-output cells.

    The source's block-``layer`` output at ``source_positions[k]`` is written into the base run at
    ``base_positions[k]`` (both cells numbered k + 1, red); every base cell above that block is recomputed
    (yellow)."""
    gap = len(source_tokens) + 3
    numbers = {("source", p): str(k + 1) for k, p in enumerate(source_positions)}
    numbers.update({("base", p): str(k + 1) for k, p in enumerate(base_positions)})
    xs, ys, colors, texts, hover = [], [], [], [], []
    for run, tokens, offset in (("source", source_tokens, 0), ("base", base_tokens, gap)):
        for lay in range(num_layers):
            for pos, token in enumerate(tokens):
                swapped = lay == layer and (run, pos) in numbers
                xs.append(offset + pos), ys.append(lay), texts.append(numbers[(run, pos)] if swapped else "")
                hover.append(f"{run} run, block {lay} output at {token!r}")
                colors.append("#EF553B" if swapped else "#FECB52" if run == "base" and lay > layer else "#d9dbe3")
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=texts, textfont={"color": "white", "size": 10},
        marker={"symbol": "square", "size": 18, "color": colors}, hovertext=hover, hoverinfo="text", showlegend=False,
    ))
    fig.add_annotation(x=gap - 0.8, y=layer, ax=len(source_tokens) - 0.2, ay=layer, xref="x", yref="y", axref="x",
                       ayref="y", showarrow=True, arrowhead=3, arrowwidth=2, arrowcolor="#EF553B")
    ticks = list(range(len(source_tokens))) + [gap + i for i in range(len(base_tokens))]
    fig.update_xaxes(tickmode="array", tickvals=ticks, ticktext=source_tokens + base_tokens, tickangle=-60, showgrid=False,
                     zeroline=False)
    fig.update_yaxes(tickmode="array", tickvals=list(range(num_layers)), ticktext=[f"block {l}" for l in range(num_layers)],
                     showgrid=False, zeroline=False, range=[-0.6, num_layers + 0.2])
    for x, text in ((len(source_tokens) / 2 - 0.5, "source run s"), (gap + len(base_tokens) / 2 - 0.5, "base run b")):
        fig.add_annotation(x=x, y=num_layers - 0.3, text=f"<b>{text}</b>", showarrow=False)
    fig.update_layout(title=title, height=230 + 45 * num_layers, margin={"t": 60})
    return fig


MASK_COLOR, CHANGED_COLOR, TOKEN_COLOR = "#b0b3c0", "#EF553B", "#1f2430"


def token_chain(chains: Mapping[str, list[list[str]]], step_labels: list[str], title: str, mask_text: str = "▒",
                per_line: int = 8, notes: Mapping[str, str] | None = None) -> go.Figure:
    """An interactive denoising chain: a slider (and play button) over steps; at each step every labelled
    sequence is drawn token by token, masks grey, tokens that changed at that step in red.

    ``chains[label][k]`` is the token list at step k (all chains have ``len(step_labels)`` states); ``notes``
    adds a line under a label (e.g. the final answer marked right or wrong). Works without a kernel."""
    labels = list(chains)
    rows = {label: -(-max(len(state) for state in chains[label]) // per_line) for label in labels}
    offsets, y = {}, 0
    for label in labels:
        offsets[label] = y
        y += rows[label] + 1.5

    def trace(label, k):
        state = chains[label][k]
        before = chains[label][k - 1] if k else state
        colors = [MASK_COLOR if tok == mask_text else CHANGED_COLOR if k and tok != old else TOKEN_COLOR
                  for tok, old in zip(state, before)]
        return go.Scatter(
            x=[i % per_line for i in range(len(state))], y=[-(offsets[label] + 1 + i // per_line) for i in range(len(state))],
            mode="text", text=state, textfont={"color": colors, "size": 15}, name=label, showlegend=False,
            hovertemplate=f"{label}: %{{text}}<extra></extra>",
        )

    fig = go.Figure(data=[trace(label, 0) for label in labels],
                    frames=[go.Frame(data=[trace(label, k) for label in labels], name=str(k)) for k in range(len(step_labels))])
    for label in labels:
        text = f"<b>{label}</b>" + (f"   {notes[label]}" if notes and label in notes else "")
        fig.add_annotation(x=-0.5, y=-offsets[label], text=text, showarrow=False, xanchor="left", font={"size": 13})
    play = {"args": [None, {"frame": {"duration": 400, "redraw": True}, "fromcurrent": True}], "label": "▶ play",
            "method": "animate"}
    pause = {"args": [[None], {"frame": {"duration": 0}, "mode": "immediate"}], "label": "❚❚", "method": "animate"}
    fig.update_layout(
        title=title, height=160 + 34 * y, margin={"l": 20, "r": 20},
        xaxis={"visible": False, "range": [-0.6, per_line - 0.4]}, yaxis={"visible": False, "range": [-(y + 0.2), 0.6]},
        updatemenus=[{"type": "buttons", "buttons": [play, pause], "x": 0, "y": 0, "xanchor": "left", "yanchor": "top",
                      "direction": "left", "pad": {"t": 40}}],
        sliders=[{"active": 0, "x": 0.25, "len": 0.75, "y": 0, "yanchor": "top", "pad": {"t": 30},
                  "currentvalue": {"prefix": "step: "},
                  "steps": [{"label": lab, "method": "animate",
                             "args": [[str(k)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}]}
                            for k, lab in enumerate(step_labels)]}],
    )
    return fig


def quality_vs_nfe(series: Mapping[str, Mapping[int, float]], title: str, yaxis_title: str,
                   intervals: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
                   percent: bool = True) -> go.Figure:
    """One line per series (e.g. ``"absorb · euler"``): a sample-quality measure against network evaluations (log x),
    with ``intervals[name][nfe] = (low, high)`` drawn as error bars. ``percent`` shows fractions in %."""
    scale = 100 if percent else 1
    fig = go.Figure()
    for name, values in series.items():
        nfes = sorted(values)
        bars = None
        if intervals and name in intervals:
            spans = [intervals[name][n] for n in nfes]
            bars = {"type": "data", "symmetric": False,
                    "array": [scale * (hi - values[n]) for n, (_, hi) in zip(nfes, spans)],
                    "arrayminus": [scale * (values[n] - lo) for n, (lo, _) in zip(nfes, spans)]}
        fig.add_trace(go.Scatter(x=nfes, y=[scale * values[n] for n in nfes], mode="lines+markers", name=name,
                                 error_y=bars))
    fig.update_layout(title=title, xaxis_title="network evaluations (steps + 1, log scale)", yaxis_title=yaxis_title,
                      height=420)
    fig.update_xaxes(type="log", tickvals=sorted({n for values in series.values() for n in values}))
    return fig


def accuracy_vs_compute(per_method: Mapping[str, list[Mapping]], title: str) -> go.Figure:
    """Rows ``{steps, nfe, accuracy, throughput}`` per method: accuracy against network evaluations (left) and
    against batch-1 seconds per question (right), one point per step count T (hover for all four)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("vs network evaluations (NFE)", "vs wall-clock per question (batch 1)"))
    for method, rows in per_method.items():
        text = [f"T={r['steps']}" for r in rows]
        hover = [f"T={r['steps']}, NFE {r['nfe']:.0f}, {1000 / r['throughput']:.0f} ms/question, "
                 f"accuracy {100 * r['accuracy']:.1f}%" for r in rows]
        style = {"mode": "lines+markers+text", "text": text, "textposition": "top left", "hovertext": hover,
                 "hoverinfo": "text", "line": {"color": METHOD_COLORS.get(method)}, "name": label(method)}
        fig.add_trace(go.Scatter(x=[r["nfe"] for r in rows], y=[100 * r["accuracy"] for r in rows], **style), 1, 1)
        fig.add_trace(go.Scatter(x=[1 / r["throughput"] for r in rows], y=[100 * r["accuracy"] for r in rows],
                                 showlegend=False, **style), 1, 2)
    fig.update_xaxes(type="log", title_text="network evaluations per question", row=1, col=1)
    fig.update_xaxes(type="log", title_text="seconds per question", row=1, col=2)
    fig.update_yaxes(title_text="accuracy (%)", range=[-3, 105], row=1, col=1)
    fig.update_layout(title=title, height=460)
    return fig


def align_chains(chains: Mapping[str, list[list[str]]], labels: Mapping[str, list[str]],
                 max_frames: int = 80) -> tuple[dict[str, list[list[str]]], list[str]]:
    """Chains of different lengths on one frame axis for ``token_chain``: a finished chain holds its last state;
    frames where nothing changes are dropped and the rest thinned evenly to at most ``max_frames`` (the first
    and last kept), so a long (GSM8K, multi-pass) chain stays a small, responsive figure."""
    total = max(len(c) for c in chains.values())
    padded = {k: c + [c[-1]] * (total - len(c)) for k, c in chains.items()}
    names = {k: v + [v[-1]] * (total - len(v)) for k, v in labels.items()}
    keep = [i for i in range(total) if i in (0, total - 1) or any(padded[k][i] != padded[k][i - 1] for k in padded)]
    if len(keep) > max_frames:
        keep = [keep[round(j * (len(keep) - 1) / (max_frames - 1))] for j in range(max_frames)]
    step_labels = [f"{i}: " + " | ".join(dict.fromkeys(names[k][i] for k in names)) for i in keep]
    return {k: [c[i] for i in keep] for k, c in padded.items()}, step_labels


def chain_gif(chains: Mapping[str, list[list[str]]], step_labels: list[str], path: str | Path, mask_text: str = "▒",
              per_line: int = 16, frame_ms: int = 300) -> Path:
    """The same denoising chain as an animated GIF (for slides): one frame per step, masks grey, changes red."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=16)
    cell, line = 56, 26
    rows = {k: -(-max(len(s) for s in c) // per_line) for k, c in chains.items()}
    height = 40 + sum(line * (r + 1) + 10 for r in rows.values())
    frames = []
    for k, step in enumerate(step_labels):
        image = Image.new("RGB", (20 + cell * per_line, height), "white")
        draw = ImageDraw.Draw(image)
        draw.text((10, 8), step, fill=TOKEN_COLOR, font=font)
        y = 40
        for name, chain in chains.items():
            draw.text((10, y), name, fill=TOKEN_COLOR, font=font)
            y += line
            for i, token in enumerate(chain[k]):
                x0, y0 = 10 + cell * (i % per_line), y + line * (i // per_line)
                if token == mask_text:  # a block, whatever glyphs the font has
                    draw.rectangle((x0, y0 + 3, x0 + cell - 8, y0 + line - 6), fill=MASK_COLOR)
                    continue
                changed = k and token != chain[k - 1][i]
                draw.text((x0, y0), token, fill=CHANGED_COLOR if changed else TOKEN_COLOR, font=font)
            y += line * rows[name] + 10
        frames.append(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path


def results_table(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Rows of ``method``/``accuracy``/``throughput`` as a display table (accuracy in %)."""
    frame = pd.DataFrame(list(rows))
    frame["method"] = frame["method"].map(label)
    frame["accuracy"] = (100 * frame["accuracy"]).round(1)
    frame["throughput"] = frame["throughput"].round(1)
    return frame.rename(columns={"accuracy": "accuracy (%)", "throughput": "examples/s"}).set_index("method")


def save_figure(fig: go.Figure, output_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as plotly JSON (small, offline; reload with ``plotly.io.read_json``)."""
    path = Path(output_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_json(path)
    return path
