"""The authors' checkpoint layout (da03/implicit_chain_of_thought, ``save_pretrained`` of Student / Emulator):
a random-weight module written in that layout loads back bit for bit and answers the same."""
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

from reasoning_lib.data import make_splits
from reasoning_lib.data.sequences import encode_examples
from reasoning_lib.implicit_cot import MindReadingStudent, ThoughtEmulator, generate_implicit
from reasoning_lib.implicit_cot.released import (
    STATE_DICT, key_table, load_released_emulator, load_released_pair, load_released_student, read_released_config,
    released_tokenizer, save_in_released_layout,
)
from reasoning_lib.runtime import seed_everything

GPT2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt2_tokenizer"

_BLOCK = [
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
]
# What Student.state_dict() lists for a 2-layer GPT-2 in the reference (HF order, then the per-layer MLPs).
GPT2_KEYS = (
    ["base_model.transformer.wte.weight", "base_model.transformer.wpe.weight"]
    + [f"base_model.transformer.h.{l}.{p}" for l in range(2) for p in _BLOCK]
    + ["base_model.transformer.ln_f.weight", "base_model.transformer.ln_f.bias", "base_model.lm_head.weight"]
)
MLP_KEYS = [
    "mlps.0.0.weight", "mlps.0.0.bias", "mlps.0.2.weight", "mlps.0.2.bias",
    "mlps.1.0.weight", "mlps.1.0.bias", "mlps.1.2.weight", "mlps.1.2.bias",
]
EMULATOR_EXTRA_KEYS = [
    "mixture_components.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
    "key_proj.weight", "key_proj.bias", "query_proj.weight", "query_proj.bias", "out_proj.weight", "out_proj.bias",
]


def _base_folder(path: Path, tokenizer) -> Path:
    """A GPT-2 'hub folder' holding only config.json (2 blocks, width 64): the loaders must not need weights."""
    GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    return path


def _random(module, seed):
    """Perturb every tensor, so that a freshly initialised module (zero biases, unit LayerNorms) cannot pass."""
    seed_everything(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


def _pair(base: Path, mixture_size=5, temperature=0.1):
    config = GPT2Config.from_pretrained(base)
    emulator = ThoughtEmulator(AutoModelForCausalLM.from_config(config), mixture_size, temperature)
    student = MindReadingStudent(AutoModelForCausalLM.from_config(config))
    return _random(emulator, 1), _random(student, 2)


@pytest.fixture
def base(tmp_path, digit_tokenizer):
    return _base_folder(tmp_path / "gpt2-tiny", digit_tokenizer)


@pytest.fixture(scope="module")
def examples():
    return make_splits(2, 4, 0, 0, seed=3).train + make_splits(3, 3, 0, 0, seed=3).train


def _assert_same_tensors(original, loaded):
    ours, again = original.state_dict(), loaded.state_dict()
    assert list(ours) == list(again)
    for name, tensor in ours.items():
        assert torch.equal(tensor, again[name]), f"{name} changed through the reference layout"


def test_saved_keys_are_the_reference_names(base, digit_tokenizer):
    emulator, student = _pair(base)
    saved = torch.load(save_in_released_layout(student, base.parent / "s", str(base)) / STATE_DICT, weights_only=True)
    assert list(saved) == GPT2_KEYS + MLP_KEYS
    assert tuple(saved["mlps.1.0.weight"].shape) == (256, 64) and tuple(saved["mlps.1.2.weight"].shape) == (64, 256)
    for layer in range(2):
        for index in (0, 2):
            assert torch.equal(saved[f"mlps.{layer}.{index}.weight"], student.readers[layer][index].weight)
    saved = torch.load(save_in_released_layout(emulator, base.parent / "e", str(base)) / STATE_DICT, weights_only=True)
    assert list(saved) == GPT2_KEYS + MLP_KEYS + EMULATOR_EXTRA_KEYS
    names = ("mlps.0.0.weight", "mixture_components.weight", "rnn.weight_ih_l0", "out_proj.weight")
    shapes = {k: tuple(saved[k].shape) for k in names}
    assert shapes == {"mlps.0.0.weight": (256, 128), "mixture_components.weight": (5, 64), "rnn.weight_ih_l0": (256, 64),
                      "out_proj.weight": (64, 128)}
    # Each reference name holds the tensor of the module part the reference gives it (not only the same names).
    same = {
        "mlps.0.0.weight": emulator.predictors[0][0].weight, "mlps.1.2.bias": emulator.predictors[1][2].bias,
        "mixture_components.weight": emulator.mixture.weight, "rnn.weight_ih_l0": emulator.lstm.weight_ih_l0,
        "rnn.weight_hh_l0": emulator.lstm.weight_hh_l0, "rnn.bias_ih_l0": emulator.lstm.bias_ih_l0,
        "rnn.bias_hh_l0": emulator.lstm.bias_hh_l0, "key_proj.weight": emulator.key.weight, "key_proj.bias": emulator.key.bias,
        "query_proj.weight": emulator.query.weight, "query_proj.bias": emulator.query.bias,
        "out_proj.weight": emulator.out.weight, "out_proj.bias": emulator.out.bias,
        "base_model.transformer.h.1.attn.c_attn.weight": emulator.lm.transformer.h[1].attn.c_attn.weight,
        "base_model.lm_head.weight": emulator.lm.lm_head.weight,
    }
    for name, tensor in same.items():
        assert torch.equal(saved[name], tensor), f"{name} holds the wrong tensor"
    config = json.loads((base.parent / "e" / "config.json").read_text())
    assert config == {"base_model": str(base), "tokenizer_name": "gpt2", "mixture_size": 5, "softmax_temperature": 0.1}
    assert list(key_table("student", 2).values())[-1] == "readers.1.2.bias"


def test_released_layout_loads_back_exactly_and_answers_the_same(base, digit_tokenizer, examples):
    emulator, student = _pair(base)
    save_in_released_layout(emulator, base.parent / "model" / "emulator", str(base))
    save_in_released_layout(student, base.parent / "model" / "student", str(base))
    emulator2, student2 = load_released_pair(base.parent / "model")
    assert (emulator2.mixture_size, emulator2.softmax_temperature) == (5, 0.1)
    assert not emulator2.training and not student2.training
    _assert_same_tensors(emulator, emulator2)
    _assert_same_tensors(student, student2)
    batch = encode_examples(digit_tokenizer, examples[:1], "nocot")[0]
    ids, sep = torch.tensor([batch.input_ids]), torch.tensor([batch.sep])
    with torch.no_grad():
        states = emulator(ids, sep).states
        assert torch.equal(states, emulator2(ids, sep).states)
        assert torch.equal(student(ids, sep, states).logits, student2(ids, sep, states).logits)
    before = generate_implicit(emulator, student, digit_tokenizer, examples, max_new_tokens=10)
    after = generate_implicit(emulator2, student2, digit_tokenizer, examples, max_new_tokens=10)
    assert before == after and any(before), before


def test_legacy_buffers_and_dataparallel_prefix_are_accepted(base):
    emulator, student = _pair(base, mixture_size=1, temperature=0.05)
    folder = save_in_released_layout(student, base.parent / "s", str(base), legacy_buffers=True)
    state = torch.load(folder / STATE_DICT, weights_only=True)
    assert list(state)[2:7] == ["base_model.transformer.h.0.ln_1.weight", "base_model.transformer.h.0.ln_1.bias",
                                "base_model.transformer.h.0.attn.bias", "base_model.transformer.h.0.attn.masked_bias",
                                "base_model.transformer.h.0.attn.c_attn.weight"]
    torch.save({f"module.{k}": v for k, v in state.items()}, folder / STATE_DICT)
    _assert_same_tensors(student, load_released_student(folder))
    _assert_same_tensors(emulator, load_released_emulator(save_in_released_layout(emulator, base.parent / "e", str(base))))


def _edited(base, module, edit):
    folder = save_in_released_layout(module, base.parent / "edited", str(base))
    state = torch.load(folder / STATE_DICT, weights_only=True)
    edit(state)
    torch.save(state, folder / STATE_DICT)
    return folder


def test_unknown_missing_and_misshapen_keys_raise_naming_them(base):
    emulator, student = _pair(base)
    folder = _edited(base, student, lambda s: s.__setitem__("mlps.0.1.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"edited/state_dict\.bin.*unexpected key\(s\) mlps\.0\.1\.weight\."):
        load_released_student(folder)
    folder = _edited(base, emulator, lambda s: s.pop("rnn.bias_hh_l0"))
    with pytest.raises(ValueError, match=r"edited/state_dict\.bin.*missing key\(s\) rnn\.bias_hh_l0 \(256,\)\."):
        load_released_emulator(folder)
    folder = _edited(base, emulator, lambda s: s.__setitem__("key_proj.weight", torch.zeros(64, 32)))
    both_shapes = r"'key_proj\.weight' has shape \(64, 32\) but ThoughtEmulator\.key\.weight expects \(64, 64\)"
    with pytest.raises(ValueError, match=both_shapes):
        load_released_emulator(folder)
    folder = _edited(base, student, lambda s: s.__setitem__("base_model.lm_head.weight", s["base_model.lm_head.weight"] + 1))
    with pytest.raises(ValueError, match="lm_head.weight' differs"):
        load_released_student(folder)


def test_wrong_kind_wrong_depth_and_missing_config(base, digit_tokenizer, tmp_path):
    emulator, student = _pair(base)
    folder = save_in_released_layout(emulator, base.parent / "e", str(base))
    with pytest.raises(ValueError, match="holds an emulator checkpoint.*use load_released_emulator"):
        load_released_student(folder)
    deeper = tmp_path / "gpt2-deeper"
    GPT2Config(vocab_size=len(digit_tokenizer), n_positions=64, n_embd=64, n_layer=3, n_head=4,
               bos_token_id=digit_tokenizer.bos_token_id, eos_token_id=digit_tokenizer.eos_token_id,
               pad_token_id=digit_tokenizer.pad_token_id).save_pretrained(deeper)
    with pytest.raises(ValueError, match=r"3-layer GPT-2.*missing key\(s\) base_model\.transformer\.h\.2\.ln_1\.weight \(64,\)"):
        load_released_emulator(folder, base_model=str(deeper))
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found: pass base_model="):
        load_released_emulator(folder)
    again = load_released_emulator(folder, base_model=str(base))  # M from the tensor, τ the reference default
    assert (again.mixture_size, again.softmax_temperature) == (5, 0.05)
    (folder / "config.json").write_text(json.dumps({"base_model": str(base), "mixture_size": 7}))
    with pytest.raises(ValueError, match="mixture_size=7 but 'mixture_components.weight'.*has 5 rows"):
        load_released_emulator(folder)
    assert read_released_config(folder, base_model="gpt2-medium").base_model == "gpt2-medium"
    with pytest.raises(FileNotFoundError, match=r"state_dict\.bin not found"):
        load_released_student(tmp_path)


def _gpt2_tokenizer(folder: Path):
    if not (GPT2_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"{GPT2_TOKENIZER} not present (the GPT-2 BPE files are optional)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    core = Tokenizer(models.BPE.from_file(str(GPT2_TOKENIZER / "vocab.json"), str(GPT2_TOKENIZER / "merges.txt")))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    end = "<|endoftext|>"
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token=end, eos_token=end, unk_token=end).save_pretrained(folder)
    return released_tokenizer(str(folder))


def test_gpt2_bpe_checkpoint_round_trip(tmp_path, examples):
    tokenizer = _gpt2_tokenizer(tmp_path / "tokenizer")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 50256
    prompt = encode_examples(tokenizer, examples[:1], "only")[0].input_ids
    assert prompt[-2:] == [220, 50256], "the reference prompt ends in ' ' + <|endoftext|>"
    base = _base_folder(tmp_path / "gpt2-tiny", tokenizer)
    emulator, student = _pair(base, mixture_size=1, temperature=0.05)
    emulator2 = load_released_emulator(save_in_released_layout(emulator, tmp_path / "e", str(base), legacy_buffers=True))
    student2 = load_released_student(save_in_released_layout(student, tmp_path / "s", str(base), legacy_buffers=True))
    _assert_same_tensors(student, student2)
    before = generate_implicit(emulator, student, tokenizer, examples[:3], max_new_tokens=6)
    assert before == generate_implicit(emulator2, student2, tokenizer, examples[:3], max_new_tokens=6)


def test_chapter_two_evaluates_a_released_pair_like_the_original(tmp_path, examples):
    """``evaluate_released`` (chapter 2's ``released_dir``) on a pair written in the authors' layout answers as the
    original modules do, with the tokenizer its config names."""
    from reasoning_lib.implicit_cot import evaluate_implicit, evaluate_released

    tokenizer = _gpt2_tokenizer(tmp_path / "tokenizer")
    base = _base_folder(tmp_path / "gpt2-tiny", tokenizer)
    emulator, student = _pair(base, mixture_size=1, temperature=0.05)
    for module, name in ((emulator, "emulator"), (student, "student")):
        save_in_released_layout(module, tmp_path / "released" / name, str(base), tokenizer_name=str(tmp_path / "tokenizer"))
    released = evaluate_released(tmp_path / "released", examples[:4], device="cpu", max_new_tokens=6)
    original = evaluate_implicit(emulator, student, tokenizer, examples[:4], batch_size=1, max_new_tokens=6)
    assert released.predictions == original.predictions and released.num_examples == 4
