"""Score Entropy Discrete Diffusion (Lou et al. 2024, arXiv 2310.16834), the core under Diffusion of Thoughts.

``noise`` (log-linear, geometric schedules), ``graph`` (absorbing and uniform forward processes, score
entropy), ``model`` (the DDiT with the published parameter names, and its EMA), ``losses`` (DWDSE with a
never-noised ``fixed`` mask), ``sampling`` (Euler and analytic predictors, denoiser, projection, NFE, the
denoising chain), ``likelihood`` (the ELBO bound), ``loading`` (hub, reference run folder, own layout),
``training`` (presets and the shared loop with EMA), ``data`` (offline review canvases; hub corpora as blocks),
``corpus`` (a corpus tokenised once into a memory-mapped token file) and ``zero_shot`` (Table 1's benchmarks).
"""
from .corpus import TokenBlocks, build_token_file, write_token_file
from .evaluation import SamplingSpeed, elbo_vs_steps, load_ema_weights, read_elbo_curve, sampling_speed
from .generative import GenerativePerplexity, generative_perplexity, quality_vs_steps
from .graph import Absorbing, Graph, Uniform, build_graph, sample_categorical
from .likelihood import ElboResult, elbo, real_tokens
from .loading import load_model, save_model
from .losses import SEDDObjective, dwdse_loss
from .model import EMA, SEDD, DDiTConfig
from .noise import GeometricNoise, LogLinearNoise, build_noise
from .sampling import SampleOutput, sample
from .training import PRESETS, SEDDRunConfig, SEDDWithEMA, get_config, train_sedd
from .zero_shot import BENCHMARKS, BenchmarkBlocks, benchmark_blocks

__all__ = [
    "Absorbing", "Graph", "Uniform", "build_graph", "sample_categorical", "ElboResult", "elbo", "real_tokens",
    "load_model", "save_model", "SEDDObjective", "dwdse_loss", "EMA", "SEDD", "DDiTConfig", "GeometricNoise",
    "LogLinearNoise", "build_noise", "SampleOutput", "sample", "PRESETS", "SEDDRunConfig", "SEDDWithEMA", "get_config",
    "train_sedd", "elbo_vs_steps", "load_ema_weights", "read_elbo_curve", "SamplingSpeed", "sampling_speed",
    "GenerativePerplexity", "generative_perplexity", "quality_vs_steps", "TokenBlocks", "build_token_file",
    "write_token_file", "BENCHMARKS", "BenchmarkBlocks", "benchmark_blocks",
]
