"""reasoning_lib: the library behind the reasoning book.

Shared pieces, once each: ``data`` (formats and generators), ``tokenization``, ``models`` (HF model
builders), ``train`` (the one training loop) with ``checkpoint``, ``evaluate`` (generation, exact match,
throughput), ``viz`` (plotly figures that render in the book), ``chapter`` (output folders, metrics.json),
``config`` and ``runtime``. Method modules build on them: ``baselines`` (chapter 1), ``implicit_cot`` (chapter 2, draft), ``sedd`` (discrete diffusion, library only so far), ``distill`` (chapter 7).
"""

__version__ = "0.1.0"
