"""reasoning_lib: the library behind the reasoning book.

Shared pieces, once each: ``data`` (formats and generators), ``tokenization``, ``models`` (HF model
builders), ``train`` (the one training loop) with ``checkpoint``, ``run_settings`` (preset to loop settings),
``run_record`` and ``run_lock`` (what a run folder holds, one writer at a time), ``answers`` (the one answer
scorer), ``evaluate`` (generation, exact match, throughput), ``viz`` (plotly figures that render in the book),
``chapter`` (output folders, metrics.json), ``resources`` (resource plans), ``tracking``, ``launch``, ``config``
and ``runtime``. One module or subpackage per method builds on them: ``baselines`` (chapter 1), ``implicit_cot``
(2), ``sedd`` (3), ``dot`` (4), ``capacity`` (5), ``probes`` (6), ``distill`` (7) and ``frontier`` (8).
"""

__version__ = "0.1.0"
