import pytest
import torch

from reasoning_lib.data import make_splits
from reasoning_lib.implicit_cot import (
    ImplicitCoT, MindReadingStudent, ThoughtEmulator, check_fits, collate_pairs, diagonal_positions, emulator_loss,
    encode_pairs, generate_implicit, load_stage, save_stage, teacher_states, train_student,
)
from reasoning_lib.implicit_cot.injection import decoder_blocks
from reasoning_lib.models import build_model
from reasoning_lib.runtime import seed_everything
from reasoning_lib.train import TrainConfig


@pytest.fixture(scope="module")
def examples():
    # Mixed sizes: separators and CoT ends differ within a batch (the reference crashed on this).
    return make_splits(2, 6, 0, 0, seed=1).train + make_splits(3, 6, 0, 0, seed=1).train


@pytest.fixture(scope="module")
def batch(digit_tokenizer, examples):
    return collate_pairs(encode_pairs(digit_tokenizer, examples), digit_tokenizer.pad_token_id)


def _lm(tokenizer, preset="mini", seed=0):
    seed_everything(seed)
    return build_model(preset, tokenizer=tokenizer).eval()


def test_diagonal_runs_from_separator_to_cot_end():
    sep, cot_end = torch.tensor([3, 7, 5]), torch.tensor([20, 40, 5])
    positions = diagonal_positions(sep, cot_end, num_layers=12)
    assert positions.shape == (3, 12)
    assert torch.equal(positions[:, 0], sep) and torch.equal(positions[:, -1], cot_end)
    assert (positions.diff(dim=1) >= 0).all() and (positions >= sep[:, None]).all() and (positions <= cot_end[:, None]).all()
    assert positions[0].tolist() == [round(3 + l * 17 / 11) for l in range(12)], "Δ = (s2 - s1)/(L - 1), rounded"
    for row in range(3):  # per-example Δ: a batch gives what each example gives alone
        assert torch.equal(diagonal_positions(sep[row : row + 1], cot_end[row : row + 1], 12)[0], positions[row])
    fixed = diagonal_positions(sep, cot_end, num_layers=4, delta=2)
    assert fixed[0].tolist() == [3, 5, 7, 9] and fixed[2].tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="delta='fast'"):
        diagonal_positions(sep, cot_end, 4, delta="fast")


def test_teacher_states_are_block_inputs_on_the_diagonal_and_standardised(digit_tokenizer, batch):
    teacher = _lm(digit_tokenizer)
    states = teacher_states(teacher, batch["cot_input_ids"], batch["sep"], batch["cot_end"])
    layers, hidden = teacher.config.num_hidden_layers, teacher.config.hidden_size
    assert states.shape == (len(batch["sep"]), layers, hidden)
    assert states.mean(-1).abs().max() < 1e-4 and (states.std(-1, unbiased=False) - 1).abs().max() < 0.02  # eps 1e-5 vs small random-init variance
    captured = {}
    hooks = [b.register_forward_pre_hook(lambda m, a, k, i=i: captured.__setitem__(i, (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
             for i, b in enumerate(decoder_blocks(teacher))]
    teacher(input_ids=batch["cot_input_ids"])
    for h in hooks:
        h.remove()
    positions = diagonal_positions(batch["sep"], batch["cot_end"], layers)
    row = 4
    for layer in range(layers):
        raw = captured[layer][row, positions[row, layer]]
        expected = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=False) + 1e-5)
        assert torch.allclose(states[row, layer], expected, atol=1e-5), f"layer {layer}: not the input of block {layer}"


def test_substitution_is_exact_and_causal(digit_tokenizer, batch):
    student = MindReadingStudent(_lm(digit_tokenizer)).eval()
    states = torch.randn(len(batch["sep"]), student.num_layers, student.hidden_size)
    seen = {}
    with torch.no_grad(), student.injecting(batch["sep"], states):  # probes registered after the injection hooks
        probes = [b.register_forward_pre_hook(lambda m, a, k, i=i: seen.__setitem__(i, (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
                  for i, b in enumerate(decoder_blocks(student.lm))]
        logits = student.lm(input_ids=batch["input_ids"]).logits
    for h in probes:
        h.remove()
    rows = torch.arange(len(batch["sep"]))
    for layer in range(student.num_layers):
        assert torch.equal(seen[layer][rows, batch["sep"]], student.readers[layer](states[:, layer]).detach())
    with torch.no_grad():
        plain = student.lm(input_ids=batch["input_ids"]).logits
        changed = student(batch["input_ids"], batch["sep"], states + 1.0).logits
    for row, sep in enumerate(batch["sep"].tolist()):
        assert torch.equal(logits[row, :sep], plain[row, :sep]), "positions before the separator must not change"
        assert not torch.allclose(logits[row, sep:], changed[row, sep:]), "the injected states must reach the answer"
        assert torch.equal(logits[row, :sep], changed[row, :sep])


def test_student_rejects_states_of_another_shape(digit_tokenizer, batch):
    student = MindReadingStudent(_lm(digit_tokenizer))
    with pytest.raises(ValueError, match="must share num_hidden_layers"):
        student(batch["input_ids"], batch["sep"], torch.zeros(len(batch["sep"]), 2, student.hidden_size))


def test_emulator_loss_is_half_squared_error_summed_over_layers():
    target = torch.randn(3, 4, 8)
    assert emulator_loss(target, target) == 0
    predicted = target + 0.5
    assert emulator_loss(predicted, target) == pytest.approx(0.5 * 0.25 * 4 * 8)
    per_layer = [emulator_loss(predicted[:, l : l + 1], target[:, l : l + 1]) for l in range(4)]
    assert sum(per_layer) == pytest.approx(float(emulator_loss(predicted, target)))


def test_emulator_context_is_zero_at_layer_0_and_all_on_k0_at_layer_1(digit_tokenizer, batch):
    emulator = ThoughtEmulator(_lm(digit_tokenizer))
    seen = []
    original = emulator.lstm.forward
    emulator.lstm.forward = lambda x, state=None: (seen.append(x.clone()), original(x, state))[1]
    prompt = batch["input_ids"][:, : int(batch["sep"].max()) + 1]
    out = emulator(prompt, batch["sep"])
    assert out.states.shape == (len(batch["sep"]), emulator.num_layers, emulator.hidden_size)
    # LSTM input = ẑ_l + c_{l-1}: equals ẑ_l at l = 0 and l = 1 (c_0 = 0)
    assert torch.equal(seen[0][:, 0], out.states[:, 0]) and torch.equal(seen[1][:, 0], out.states[:, 1])
    assert not torch.equal(seen[2][:, 0], out.states[:, 2]), "from layer 2 on, attention context is added"


def test_coupled_gradients_reach_both_models_unless_frozen(digit_tokenizer, batch):
    for fix in (False, True):
        model = ImplicitCoT(ThoughtEmulator(_lm(digit_tokenizer)), MindReadingStudent(_lm(digit_tokenizer, seed=1)), fix_emulator=fix)
        model(batch["input_ids"], batch["sep"], labels=batch["labels"]).loss.backward()
        emulator_grads = [p.grad for p in model.emulator.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        student_grads = [p.grad for p in model.student.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        assert student_grads, "no gradient reached the student"
        assert bool(emulator_grads) != fix, "fix_emulator decides whether the emulator gets gradients"


def test_cached_generation_matches_recomputing_with_substitution(digit_tokenizer, examples):
    emulator, student = ThoughtEmulator(_lm(digit_tokenizer)).eval(), MindReadingStudent(_lm(digit_tokenizer, seed=1)).eval()
    fast = generate_implicit(emulator, student, digit_tokenizer, examples, max_new_tokens=12)
    slow = generate_implicit(emulator, student, digit_tokenizer, examples, max_new_tokens=12, use_cache=False)
    single = [generate_implicit(emulator, student, digit_tokenizer, [e], max_new_tokens=12)[0] for e in examples]
    assert fast == slow == single


def test_stages_save_and_load_exactly(digit_tokenizer, batch, tmp_path):
    for module in (MindReadingStudent(_lm(digit_tokenizer)), ThoughtEmulator(_lm(digit_tokenizer), mixture_size=len(digit_tokenizer))):
        save_stage(module, tmp_path / type(module).__name__, digit_tokenizer)
        again = load_stage(tmp_path / type(module).__name__)
        assert type(again) is type(module)
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, again.state_dict()[name]), name
    with pytest.raises(FileNotFoundError, match="not a saved implicit-CoT stage"):
        load_stage(tmp_path)


def test_teacher_that_does_not_fit_is_refused(digit_tokenizer):
    with pytest.raises(ValueError, match="same \\(layers, hidden size\\)"):
        check_fits(_lm(digit_tokenizer, "tiny"), _lm(digit_tokenizer, "mini"), digit_tokenizer)
    from reasoning_lib.tokenization import build_digit_tokenizer

    bigger = build_digit_tokenizer([str(d) for d in range(10)] + [f"x{i}" for i in range(40)])
    with pytest.raises(ValueError, match="another tokenizer"):
        check_fits(_lm(digit_tokenizer), _lm(digit_tokenizer), bigger)


def test_student_with_teacher_states_trains_on_mixed_separator_positions(digit_tokenizer, examples, tmp_path):
    config = TrainConfig(max_steps=30, batch_size=12, lr=3e-3, log_every=10, progress=False, device="cpu")
    student, result = train_student(_lm(digit_tokenizer), digit_tokenizer, examples, "mini", config, tmp_path)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert (tmp_path / "final" / "modules.safetensors").is_file()


def test_presets_switch_task_and_model_and_validate():
    from reasoning_lib.implicit_cot.presets import get_config

    paper = get_config("paper", task="5x5", model="gpt2-medium")
    assert (paper.baseline.task, paper.baseline.model, paper.lr, paper.batch_size) == ("5x5", "gpt2-medium", 5e-5, 32)
    assert paper.stage_config(seed=0, device="cpu", num_examples=808_000).max_steps == 808_000 * 40 // 32
    # GSM8K: 40 epochs over the 6,973 problems actually loaded, not over the 808k of the multiplication preset
    assert paper.stage_config(seed=0, device="cpu", num_examples=6973).max_steps == -(-6973 * 40 // 32)
    on_eight = paper.stage_config(seed=0, device="cpu", num_examples=808_000, world_size=8)
    assert (on_eight.max_steps, on_eight.batch_size * on_eight.grad_accum_steps * 8) == (808_000 * 40 // 32, 32)
    with pytest.raises(ValueError, match="delta='fast'"):
        get_config("tiny", delta="fast")
    with pytest.raises(ValueError, match="preset='huge'"):
        get_config("huge")
    gsm8k = get_config("paper", task="gsm8k", train_file="train.txt")
    assert gsm8k.mixture_size == 50257, "GSM8K uses one mixture component per GPT-2 token"
    assert (gsm8k.baseline.num_epochs, gsm8k.baseline.num_test, gsm8k.baseline.train_file) == (15, 1319, "train.txt")
    assert get_config("paper").mixture_size == 1
