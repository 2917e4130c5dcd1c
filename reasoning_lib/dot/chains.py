"""The denoising chain of DoT and DoT-MP as a figure: a plotly slider in the book, an ipywidgets panel in
JupyterLab (type a question, pick steps/predictor/seed, watch it), GIF and HTML files for slides."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .. import viz
from ..data.examples import Example
from ..answers import answers_match, extract_answer
from .data import decode_tokens
from .inference import Sampler

MASK_TEXT = "▒"


def chain_figure(samplers: dict[str, Sampler], question: str, gold: str | None = None, seed: int = 0,
                 max_passes: int = 10, per_line: int = 16, max_frames: int = 80):
    """(figure, token chains, step labels) for one question, every variant side by side on one slider;
    the note under each variant gives its final answer, marked right or wrong when ``gold`` is known."""
    chains, labels, notes = {}, {}, {}
    for variant, sampler in samplers.items():
        out = sampler.generate(variant, [question], max_passes, torch.Generator().manual_seed(seed), record_chain=True)
        name = viz.label(variant)
        chains[name] = [decode_tokens(sampler.tokenizer, sampler.layout, state, MASK_TEXT) for state in out.chains[0]]
        labels[name] = out.chain_labels[0]
        answer = out.answers[0]
        verdict = "" if gold is None else ("  ✓ right" if answers_match(answer, gold) else "  ✗ wrong")
        notes[name] = f"answer: {answer if answer is not None else '(none)'}{verdict}   NFE {out.nfe[0]}"
    frames, steps = viz.align_chains(chains, labels, max_frames)
    title = f"Denoising chains: {question}" + (f"  (gold {gold})" if gold else "")
    return viz.token_chain(frames, steps, title, MASK_TEXT, per_line, notes), frames, steps


def export_chain(fig, frames, steps, output_dir: str | Path, name: str = "denoising_chain") -> dict[str, Path]:
    """Write the chain as a self-contained HTML page (plotly.js inlined, works offline) and an animated GIF."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"{name}.html"
    fig.write_html(html, include_plotlyjs=True, auto_play=False)
    return {"html": html, "gif": viz.chain_gif(frames, steps, folder / f"{name}.gif", MASK_TEXT)}


def chain_panel(samplers: dict[str, Sampler], example: Example, max_passes: int = 10):
    """An ipywidgets panel (live kernel only): question, steps, predictor and seed, and the chain it draws."""
    import ipywidgets as widgets
    from IPython.display import display

    question = widgets.Text(value=example.question, description="question", layout={"width": "420px"})
    steps = widgets.Dropdown(options=[1, 2, 4, 8, 16, 32, 64], value=next(iter(samplers.values())).steps,
                             description="steps T")
    predictor = widgets.Dropdown(options=["analytic", "euler"], value="analytic", description="predictor")
    seed = widgets.IntText(value=0, description="seed", layout={"width": "160px"})
    button = widgets.Button(description="sample", button_style="primary")
    shown = widgets.Output()

    def draw(_=None):
        chosen = {v: replace(s, steps=steps.value, predictor=predictor.value) for v, s in samplers.items()}
        gold = extract_answer(example.answer) if question.value.strip() == example.question else None
        with shown:
            shown.clear_output(wait=True)
            try:
                fig, _, _ = chain_figure(chosen, question.value.strip(), gold, seed.value, max_passes)
                display(fig)
            except ValueError as err:  # e.g. a question longer than the canvas
                print(f"cannot sample this question: {err}")

    button.on_click(draw)  # nothing is sampled until the reader asks (an executed notebook never waits on it)
    with shown:
        print("press 'sample' to draw the chain")
    return widgets.VBox([widgets.HBox([question, button]), widgets.HBox([steps, predictor, seed]), shown])
