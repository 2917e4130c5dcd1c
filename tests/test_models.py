import pytest
import torch

from reasoning_lib.models import SIZE_PRESETS, attention_implementation, build_model, count_parameters, load_saved


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_presets_build_with_the_tokenizers_vocabulary(arch, digit_tokenizer):
    model = build_model("tiny", arch=arch, tokenizer=digit_tokenizer)
    layers, hidden, _ = SIZE_PRESETS["tiny"]
    assert model.config.num_hidden_layers == layers and model.config.hidden_size == hidden
    assert model.config.vocab_size == len(digit_tokenizer)
    ids = torch.tensor([[3, 4, 5, digit_tokenizer.eos_token_id]])
    logits = model(input_ids=ids).logits
    assert logits.shape == ((1, 4, len(digit_tokenizer)) if arch != "bert" else (1, 2))


def test_gpt2_tiny_is_small_and_uses_sdpa_on_cpu(digit_tokenizer):
    model = build_model("tiny", tokenizer=digit_tokenizer)
    assert 0.3e6 < count_parameters(model) < 0.7e6
    if not torch.cuda.is_available():
        assert attention_implementation() == "sdpa"
        assert model.config._attn_implementation == "sdpa"


def test_wrong_preset_and_arch_are_named(digit_tokenizer):
    with pytest.raises(ValueError, match="arch='gpt3'"):
        build_model("tiny", arch="gpt3", tokenizer=digit_tokenizer)
    with pytest.raises(FileNotFoundError, match="not a size preset"):
        build_model("huge", tokenizer=digit_tokenizer)


def test_saved_model_reloads_with_identical_outputs(digit_tokenizer, tmp_path):
    model = build_model("tiny", tokenizer=digit_tokenizer).eval()
    model.save_pretrained(tmp_path)
    again = load_saved(str(tmp_path)).eval()
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    with pytest.raises(FileNotFoundError, match="no saved model folder"):
        load_saved(str(tmp_path / "missing"))


@pytest.mark.parametrize("num_labels", [3, 1])
def test_a_saved_classifier_reloads_with_its_own_number_of_labels(tmp_path, num_labels):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=num_labels)
    model = BertForSequenceClassification(config).eval()  # e.g. an MNLI teacher (3 labels) or a regressor (1)
    model.save_pretrained(tmp_path)
    again = load_saved(str(tmp_path), arch="bert").eval()  # used to rebuild a 2-label head: size mismatch
    assert again.config.num_labels == num_labels
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    assert build_model(str(tmp_path), arch="bert").config.num_labels == num_labels  # the folder's count by default


def test_size_presets_default_to_two_labels_and_take_another(digit_tokenizer):
    assert build_model("tiny", arch="bert", tokenizer=digit_tokenizer).config.num_labels == 2
    three = build_model("tiny", arch="bert", tokenizer=digit_tokenizer, num_labels=3)
    assert three(input_ids=torch.tensor([[3, 4, 5]])).logits.shape == (1, 3)
    with pytest.raises(ValueError, match="num_labels=0"):
        build_model("tiny", arch="bert", tokenizer=digit_tokenizer, num_labels=0)
