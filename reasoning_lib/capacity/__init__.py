"""Knowledge capacity in bits per parameter (Allen-Zhu & Li 2024, arXiv 2404.05405) on synthetic profiles,
following ``EleutherAI/transformer-reasoning`` (profiles, QA text, entropy and capacity measurement).

``pools`` (offline name and value lists), ``profiles`` (the seeded generator, HF ``Dataset`` save/load, hub
loader), ``splits`` (held-out 2-hop sets and eval questions), ``questions`` (QA templates, fast pre-tokenised
assembly, the torch dataset), ``tokenizer`` (byte-level BPE), ``sizing`` (Llama configs from a parameter budget),
``entropy`` (dataset entropy and capacity formulas), ``losses`` (per-answer losses of a model), ``stream``
(the training stream: whole QAs, fresh per chunk-epoch, bounded memory), ``report`` (capacity under every
reported scheme, its checkpoint schedule, convergence over a fixed window) and ``sweep`` (worlds x model sizes,
which runs are capacity-bound). Probes (the reference's ``train/train_probe.py``) live in ``reasoning_lib.probes``.
"""
from .entropy import (LAW_BITS_PER_PARAM, Capacity, EntropyBudget, birth_date_entropy, capacity_2_1_hop,
                      capacity_from_losses, capacity_from_mean_loss, dataset_entropy, entropy_budget, log2_binomial,
                      mean_subject_loss, name_selection_bits, nats_to_bits, per_hop_loss, subject_entropies)
from .losses import answer_nats, mean_loss_by_subject, question_losses, subject_losses, text_question_losses
from .pools import ValuePools, default_pools, faker_available, faker_pools, synthetic_pools
from .profiles import (ATTRIBUTES, RELATIONS, ProfileConfig, Profiles, generate_profiles, hub_profile_id,
                       load_hub_profiles)
from .questions import (QADataset, QAEncoder, QuestionSampler, collate_qa, qa_text, question_text,
                        questions_to_text)
from .report import (REPORTED, capacity_budgets, capacity_eval_steps, capacity_rows, is_converged,
                     two_hop_subject_questions, window_convergence)
from .sizing import (build_llama, config_parameter_count, count_llama_parameters, llama_config,
                     llama_config_for_budget, reference_hidden_size)
from .splits import EVAL_MODES, QuestionBatch, TwoHopSplit, eval_questions, iter_eval_questions, one_hop_questions
from .stream import QAStream, pack_whole
from .tokenizer import build_qa_tokenizer, qa_corpus, train_bpe_tokenizer

__all__ = [
    "LAW_BITS_PER_PARAM", "REPORTED", "QAStream", "capacity_budgets", "capacity_eval_steps", "capacity_rows",
    "is_converged", "mean_subject_loss", "pack_whole", "two_hop_subject_questions", "window_convergence",
    "Capacity", "EntropyBudget", "birth_date_entropy", "capacity_2_1_hop", "capacity_from_losses",
    "capacity_from_mean_loss", "dataset_entropy", "entropy_budget", "log2_binomial", "name_selection_bits",
    "nats_to_bits", "per_hop_loss", "subject_entropies", "answer_nats", "mean_loss_by_subject", "question_losses",
    "subject_losses", "text_question_losses", "ValuePools", "default_pools", "faker_available", "faker_pools",
    "synthetic_pools", "ATTRIBUTES", "RELATIONS", "ProfileConfig", "Profiles", "generate_profiles",
    "hub_profile_id", "load_hub_profiles", "QADataset", "QAEncoder", "QuestionSampler", "collate_qa", "qa_text",
    "question_text", "questions_to_text", "build_llama", "config_parameter_count", "count_llama_parameters",
    "llama_config", "llama_config_for_budget", "reference_hidden_size", "EVAL_MODES", "QuestionBatch",
    "TwoHopSplit", "eval_questions", "iter_eval_questions", "one_hop_questions", "build_qa_tokenizer", "qa_corpus",
    "train_bpe_tokenizer",
]
