"""Stand-ins for the Hugging Face hub in tests: a local cache in the hub's exact layout, holding random-init
models at the real configs, and GPT-2's real byte-level BPE built from the files in ``../shared`` (skipped when
absent). Code under test then loads ``"gpt2"`` exactly as on a machine with internet, from the cache."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPT2_FILES = ROOT.parent / "shared" / "data" / "gpt2_tokenizer"
EOT = "<|endoftext|>"


def gpt2_tokenizer():
    """GPT-2's tokenizer from ``vocab.json`` + ``merges.txt`` (the recipe of their README); skips when absent."""
    if not (GPT2_FILES / "vocab.json").is_file():
        pytest.skip(f"{GPT2_FILES} not present (../shared is optional)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2TokenizerFast

    vocab = json.loads((GPT2_FILES / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (GPT2_FILES / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
              if line.strip()]
    core = Tokenizer(models.BPE(vocab, merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return GPT2TokenizerFast(tokenizer_object=core, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """``cache/models--org--name/snapshots/<commit>/``, with ``refs/main`` naming the commit, as the hub writes."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def add_gpt2(cache: Path, repo_id: str = "gpt2", **shape) -> Path:
    """A random-init GPT-2 at the hub's config (GPT-2 small unless ``shape`` overrides it) with the real tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    snapshot = snapshot_dir(cache, repo_id)
    if not (snapshot / "config.json").is_file():
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(**shape)).save_pretrained(snapshot)  # GPT2Config() is the hub's gpt2 config
        gpt2_tokenizer().save_pretrained(snapshot)
    return snapshot


def add_sedd_small(cache: Path, repo_id: str = "louaaron/sedd-small") -> Path:
    """sedd-small's ``config.json`` (the reference's nested config) and random ``pytorch_model.bin``."""
    import torch

    from reasoning_lib.sedd.loading import HUB_WEIGHTS
    from reasoning_lib.sedd.model import SEDD, DDiTConfig

    snapshot = snapshot_dir(cache, repo_id)
    if not (snapshot / HUB_WEIGHTS).is_file():
        config = {"tokens": 50257, "model": {"name": "small", "type": "ddit", "hidden_size": 768, "cond_dim": 128,
                                             "length": 1024, "n_blocks": 12, "n_heads": 12, "scale_by_sigma": True,
                                             "dropout": 0.1},
                  "graph": {"type": "absorb", "file": "data", "report_all": False},
                  "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20}}
        (snapshot / "config.json").write_text(json.dumps(config, indent=2))
        torch.manual_seed(0)
        model = SEDD(DDiTConfig.from_reference(config))
        torch.save(model.state_dict(), snapshot / HUB_WEIGHTS)
    return snapshot


# Common English words (plus the generated reviews' vocabulary, added below) for the stand-in BERT vocabulary: the
# generated GLUE sentences and WikiText documents of the tests are written from them, so they tokenise into known
# word pieces rather than [UNK].
ENGLISH_WORDS = tuple(dict.fromkeys("""
the of and to in a is was for on as with by he it at from his an were are which this that be or has had first one
their its new after but who not they have her she two been other when there all during into school time may years
more most only over city some world would where later up such used many can state about national out known
university united then made also than these part second well year american film team season game played river
album song band music war army king church station road bridge ship village town county north south east west
district century history group area family life series number three four five six seven eight nine ten early late
old large small high long great major local public final home people work book story character night day between
under against through while since before around both each another several like same however because became began
won lost built released opened moved wrote named called based included given found set held took led served died
born married considered described recorded produced directed published appeared returned reached continued remained
received announced completed designed developed established formed located replaced reported started supported
question answer sentence premise hypothesis whether what how why does did do could should will good bad
""".split()))
# The real bert-base-uncased vocabulary's fixed ids: [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102,
# [MASK] 103, then [unused99..993] up to 998; characters and word pieces follow.
BERT_BASE_VOCAB_SIZE = 30_522


def bert_base_vocab(words=ENGLISH_WORDS) -> list[str]:
    """30,522 tokens in bert-base-uncased's id layout: special tokens at their real ids, single characters with their
    ``##`` continuations, common suffixes, ``words``, then ``[unusedN]`` fillers up to the real size."""
    import string

    from reasoning_lib.data import reviews

    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
             *(f"[unused{i}]" for i in range(99, 994))]
    chars = string.punctuation + string.digits + string.ascii_lowercase
    vocab += [*chars, *(f"##{c}" for c in string.digits + string.ascii_lowercase)]
    vocab += ["##ed", "##ing", "##ly", "##er", "##es", "##ion"]
    vocab += [w for w in dict.fromkeys([*words, *reviews.WORDS]) if w not in vocab]
    filler = 994
    while len(vocab) < BERT_BASE_VOCAB_SIZE:
        vocab.append(f"[unused{filler}]")
        filler += 1
    return vocab


def bert_tokenizer(vocab: list[str]):
    """A lowercasing BERT WordPiece tokenizer (``[CLS] $A [SEP]``) over ``vocab`` (ids in list order)."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.model_max_length = 512  # bert-base-uncased's tokenizer_config.json
    return tokenizer


def add_bert_base(cache: Path, repo_id: str = "bert-base-uncased") -> Path:
    """A random-init BERT masked LM at the hub's bert-base-uncased config (``BertConfig()``: vocabulary 30,522, 12
    blocks of width 768) with a WordPiece tokenizer of exactly 30,522 entries at the real special-token ids.

    The weights are those the hub's checkpoint holds: the encoder with its pooler, the MLM head and the
    next-sentence head (``BertForPreTraining``), so ``BertForMaskedLM`` and ``BertForSequenceClassification`` load
    from it exactly as from the hub (the classifier keeps the pooler); ``config.json`` names ``BertForMaskedLM``,
    as the hub's does."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    snapshot = snapshot_dir(cache, repo_id)
    if not (snapshot / "config.json").is_file():
        torch.manual_seed(0)
        vocab = bert_base_vocab()
        assert len(vocab) == BERT_BASE_VOCAB_SIZE and len(set(vocab)) == len(vocab)
        BertForPreTraining(BertConfig()).save_pretrained(snapshot)  # BertConfig() is the hub's bert-base-uncased
        config = json.loads((snapshot / "config.json").read_text())
        (snapshot / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}, indent=2))
        bert_tokenizer(vocab).save_pretrained(snapshot)
    return snapshot
