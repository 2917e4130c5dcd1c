import pytest
import torch

from reasoning_lib.data import Example, make_splits
from reasoning_lib.evaluate import prompt_batch, evaluate, generate_text, greedy_generate
from reasoning_lib.models import build_model
from reasoning_lib.runtime import seed_everything


@pytest.fixture(scope="module")
def model(digit_tokenizer):
    seed_everything(1)
    return build_model("tiny", tokenizer=digit_tokenizer).eval()


@pytest.fixture(scope="module")
def examples():
    # Questions of different lengths, so batched prompts really are left-padded.
    return make_splits(2, 4, 0, 0, seed=5).train + make_splits(3, 4, 0, 0, seed=5).train


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cached_decoding_equals_full_recomputation(digit_tokenizer, examples, arch):
    seed_everything(2)
    net = build_model("tiny", arch=arch, tokenizer=digit_tokenizer).eval()
    batch = prompt_batch(digit_tokenizer, examples, "cpu")
    ids = dict(eos_token_id=digit_tokenizer.eos_token_id, pad_token_id=digit_tokenizer.pad_token_id,
               num_separators=2, max_new_tokens=20)
    fast = greedy_generate(net, **batch, **ids, use_cache=True)
    slow = greedy_generate(net, **batch, **ids, use_cache=False)
    assert torch.equal(fast, slow), "KV-cache decoding diverged from recomputing the whole sequence"


def test_batched_generation_equals_one_at_a_time(model, digit_tokenizer, examples):
    batched = generate_text(model, digit_tokenizer, examples, num_separators=2, max_new_tokens=20)
    single = [generate_text(model, digit_tokenizer, [e], num_separators=2, max_new_tokens=20)[0] for e in examples]
    assert batched == single, "left padding changed the result: check position ids and the attention mask"


def test_generation_stops_after_the_requested_number_of_separators(digit_tokenizer):
    eos = digit_tokenizer.eos_token_id

    class Scripted(torch.nn.Module):
        """Emits a fixed token script, one per call, whatever the input (an oracle for the stopping rule)."""

        def __init__(self, script):
            super().__init__()
            self.script, self.calls, self.weight = script, 0, torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, **kwargs):
            logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], len(digit_tokenizer))
            logits[:, -1, self.script[min(self.calls, len(self.script) - 1)]] = 1.0
            self.calls += 1
            return type("Out", (), {"logits": logits, "past_key_values": None})()

    five, hashes = digit_tokenizer.convert_tokens_to_ids(["5", "####"])
    script = [five, eos, hashes, five, eos, five, five]
    prompt = {"input_ids": torch.tensor([[five, eos]]), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    out = greedy_generate(Scripted(script), **prompt, eos_token_id=eos, pad_token_id=0, num_separators=2, max_new_tokens=50)
    assert out[0].tolist() == script[:5]
    out = greedy_generate(Scripted(script), **prompt, eos_token_id=eos, pad_token_id=0, num_separators=1, max_new_tokens=50)
    assert out[0].tolist() == script[:2]


def test_evaluate_reports_accuracy_and_throughput(model, digit_tokenizer, examples):
    result = evaluate(model, digit_tokenizer, examples, num_separators=1, max_new_tokens=10)
    assert result.num_examples == len(examples) == len(result.predictions)
    assert 0.0 <= result.accuracy <= 1.0 and result.throughput > 0
    with pytest.raises(ValueError, match="no examples"):
        evaluate(model, digit_tokenizer, [], num_separators=1)


def test_evaluate_scores_exact_match(model, digit_tokenizer, monkeypatch):
    examples = [Example("1 2 * 3 4", "", "#### 3 4 0 0"), Example("1 2 * 3 4", "", "#### 3 4 0 1")]
    monkeypatch.setattr("reasoning_lib.evaluate.generate_text", lambda *a, **k: ["#### 3 4 0 0"] * len(a[2]))
    result = evaluate(model, digit_tokenizer, examples, batch_size=2)
    assert result.correct == [True, False] and result.accuracy == 0.5


def test_position_accuracy_counts_each_answer_digit():
    from reasoning_lib.evaluate import position_accuracy

    examples = [Example("q", "", "#### 1 2 3"), Example("q", "", "#### 4 5 6")]
    assert position_accuracy(["#### 1 2 0", "x #### 4 0 0"], examples) == [1.0, 0.5, 0.0]
    assert position_accuracy(["#### 1", "no answer"], examples) == [0.5, 0.0, 0.0]
