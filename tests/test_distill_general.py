"""General causal distillation (Wu et al. 2022's WikiText-103 setting) and GLUE evaluation, offline.

A WordPiece tokenizer is trained here on a generated WikiText-format corpus, and a tiny BERT masked LM saved with
``save_pretrained`` stands in for ``bert-base-uncased``."""
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from reasoning_lib.distill import general as G
from reasoning_lib.distill import glue as GL
from reasoning_lib.distill.general_main import main
from reasoning_lib.distill.intervention import encoder_layers

WORDS = ("the a of in river city king war song album film team season game station road church army ship bridge "
         "played built won lost wrote released opened moved became large small early late first second new old north "
         "south").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wikitext_lines(articles: int = 30, seed: int = 0) -> list[str]:
    """WikiText's layout: ' = Title = ' headings, paragraphs, blank lines between them."""
    rng = random.Random(seed)
    lines = []
    for a in range(articles):
        lines += [f" = {rng.choice(WORDS).title()} {a} = ", ""]
        for _ in range(3):
            lines += [" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 90))).capitalize() + " .", ""]
    return lines


def wordpiece_tokenizer(lines: list[str], vocab_size: int = 200) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                                              show_progress=False))
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    core.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def tiny_bert(tokenizer, layers: int = 4, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def lines():
    return wikitext_lines()


@pytest.fixture(scope="module")
def tokenizer(lines):
    return wordpiece_tokenizer(lines)


@pytest.fixture(scope="module")
def teacher(tokenizer):
    return tiny_bert(tokenizer)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tokenizer, teacher):
    folder = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("wikitext") / "train.jsonl"
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def config(teacher_dir):
    return G.get_config("smoke", teacher=str(teacher_dir), max_length=48)


@pytest.fixture(scope="module")
def corpus(config, tokenizer, corpus_file):
    return G.prepare_corpus(config, tokenizer, [str(corpus_file)])


@pytest.fixture(scope="module")
def batch(config, tokenizer, corpus):
    torch.manual_seed(0)
    return G.make_collator(config, tokenizer, corpus)([corpus[i] for i in range(8)])


# ---------------------------------------------------------------------- the student
def test_distilbert_student_copies_every_other_teacher_block(teacher):
    student = G.build_general_student(teacher, [0, 2], "distilbert", freeze_positions=True)
    ours, theirs = student.state_dict(), teacher.state_dict()
    names = G.student_source_names(student, [0, 2], copy_head_transform=False)
    assert names["distilbert.transformer.layer.1.attention.q_lin.weight"] == "bert.encoder.layer.2.attention.self.query.weight"
    assert names["distilbert.transformer.layer.0.output_layer_norm.bias"] == "bert.encoder.layer.0.output.LayerNorm.bias"
    block_params = [n for n in names if ".transformer.layer." in n]
    assert len(block_params) == 2 * 16  # every weight and bias of both blocks
    for name, source in names.items():
        assert torch.equal(ours[name], theirs[source]), name
    assert not torch.equal(ours["distilbert.transformer.layer.1.ffn.lin1.weight"],
                           theirs["bert.encoder.layer.1.intermediate.dense.weight"])  # block 1 is not the source
    # the output layer shares the copied word table; the head's transform stays random, as the reference extracts
    assert student.vocab_projector.weight.data_ptr() == student.distilbert.embeddings.word_embeddings.weight.data_ptr()
    assert "vocab_transform.weight" not in names and not student.distilbert.embeddings.position_embeddings.weight.requires_grad
    assert student.config.n_layers == 2 and student.config.dim == teacher.config.hidden_size


def test_bert_student_copies_the_chosen_blocks_and_everything_else(teacher):
    student = G.build_general_student(teacher, [1, 3], "bert", copy_head_transform=True)
    ours, theirs = student.state_dict(), teacher.state_dict()

    def source(name):  # student block j <- teacher block [1, 3][j]; everything else by its own name
        for j, t in enumerate([1, 3]):
            if f"encoder.layer.{j}." in name:
                return name.replace(f"encoder.layer.{j}.", f"encoder.layer.{t}.")
        return name

    for name in ours:
        assert torch.equal(ours[name], theirs[source(name)]), name
    assert student.bert.embeddings.position_embeddings.weight.requires_grad  # not frozen unless asked


def test_a_distilbert_copy_of_every_block_computes_what_the_teacher_computes(teacher, batch):
    # BERT adds token-type row 0 to every token and DistilBERT has no such table: with it zeroed, copying all
    # blocks and the head must give the teacher's logits, which checks every name of the mapping
    same = tiny_bert_like(teacher)
    same.bert.embeddings.token_type_embeddings.weight.data.zero_()
    student = G.build_general_student(same, [0, 1, 2, 3], "distilbert", copy_head_transform=True).eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        assert torch.allclose(student(**inputs).logits, same(**inputs).logits, atol=1e-5)


def tiny_bert_like(model):
    copy = BertForMaskedLM(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy


def test_student_building_refuses_bad_layers_and_teachers(teacher):
    with pytest.raises(ValueError, match=r"student layers \[0, 4\] must be block indices of the 4-block teacher"):
        G.build_general_student(teacher, [0, 4])
    with pytest.raises(ValueError, match="arch='gpt2' is not allowed"):
        G.build_general_student(teacher, [0], "gpt2")


def test_site_mapping_aligns_the_middles():
    assert G.site_mapping("middle", 12, 6) == {2: [5]}  # after 6 of 12 teacher blocks <-> after 3 of 6 student blocks
    assert G.site_mapping("middle", 4, 2) == {0: [1]}
    assert G.site_mapping("full", 12, 6)[5] == [10, 11] and G.site_mapping("1:2,3", 4, 2) == {1: [2, 3]}
    with pytest.raises(ValueError, match="'middle' needs even block counts"):
        G.site_mapping("middle", 12, 3)


# ---------------------------------------------------------------------- losses
def test_kd_of_identical_logits_leaves_only_the_entropy_term():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    T = 2.0
    p = F.softmax(teacher[mask] / T, -1)
    soft_ce = -(p * F.log_softmax(student[mask] / T, -1)).sum(-1).mean()  # the soft cross-entropy
    entropy = -(p * p.log()).sum(-1).mean()  # its value for identical logits: the teacher's entropy alone
    self_ce = -(p * F.log_softmax(teacher[mask] / T, -1)).sum(-1).mean()
    assert torch.allclose(self_ce, entropy)
    assert torch.allclose(G.kd_loss(teacher, student, mask, T), T**2 * (soft_ce - entropy), atol=1e-6)
    assert float(G.kd_loss(teacher, teacher.clone(), mask, T)) == pytest.approx(0.0, abs=1e-6)
    changed = student.clone()
    changed[0, 4] += 100.0  # a padding position: not counted
    assert torch.equal(G.kd_loss(teacher, changed, mask, T), G.kd_loss(teacher, student, mask, T))


def test_cosine_loss_is_zero_for_aligned_states_and_two_for_opposite_ones():
    torch.manual_seed(0)
    h = torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert float(G.cosine_loss(h, h.clone(), mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(G.cosine_loss(3 * h, h, mask)) == pytest.approx(0.0, abs=1e-6)  # the scale does not count
    assert float(G.cosine_loss(-h, h, mask)) == pytest.approx(2.0, abs=1e-6)
    other = torch.randn(2, 4, 8)
    expected = (1 - F.cosine_similarity(other, h, dim=-1)).mean()
    assert torch.allclose(G.cosine_loss(other, h, mask), expected)


def test_mlm_loss_counts_only_the_masked_positions():
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[-100, 2, -100]])
    assert torch.allclose(G.mlm_loss(logits, labels), F.cross_entropy(logits[0, 1:2], labels[0, 1:2]))


def test_the_intervention_term_follows_the_swapped_states(config, teacher, batch):
    student = G.general_student(config, teacher).eval()
    objective = G.make_objective(config, "causal", teacher)
    assert objective.mapping == {0: [1]}
    # swapping every position of a sequence with itself at the same site is no intervention at all
    identity = G.GeneralObjective(teacher, objective.mapping, objective.weights, prop=1.0, consecutive=True)
    same = {**batch, "source_input_ids": batch["input_ids"], "source_attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        terms = identity.terms(student, same)
        assert torch.allclose(terms["causal_ce"], terms["ce"], atol=1e-6)
        assert torch.allclose(terms["causal_cos"], terms["cos"], atol=1e-6)
        swapped = identity.terms(student, batch)["causal_ce"]  # the real duals: the counterfactuals move
        assert abs(float(swapped) - float(terms["ce"])) > 1e-4
        torch.manual_seed(1)
        other = identity.terms(student, {**batch, "source_input_ids": batch["source_input_ids"].roll(1, 0),
                                         "source_attention_mask": batch["source_attention_mask"].roll(1, 0)})
        assert abs(float(other["causal_ce"]) - float(swapped)) > 1e-5
    # a student that is the teacher, aligned block for block, matches every counterfactual
    twin = G.GeneralObjective(teacher, {1: [1]}, objective.weights, prop=0.3)
    with torch.no_grad():
        assert float(twin.terms(tiny_bert_like(teacher), batch)["causal_ce"]) == pytest.approx(0.0, abs=1e-6)
    assert set(G.make_objective(config, "standard", teacher).terms(student, batch)) == {"ce", "mlm", "cos"}


def test_gradients_reach_the_student_through_the_source_run_and_never_the_teacher(config, teacher, batch):
    student = G.general_student(config, teacher)
    site = encoder_layers(student)[0]  # block 0 is the site; the source run's values flow through it
    only_causal = G.GeneralObjective(teacher, {0: [1]}, {"causal_ce": 1.0}, prop=0.5)
    only_causal(student, batch).backward()
    assert site.ffn.lin1.weight.grad is not None and site.ffn.lin1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


# ---------------------------------------------------------------------- corpus and masking
def test_corpus_is_cut_as_the_reference_cuts_it(tokenizer):
    long = "river " * 100
    lines = ["", " = Short = ", long, "the king of the river city built a bridge in the early season .", "x" * 3]
    tokens, offsets = G.encode_texts(tokenizer, lines, max_length=32, min_length=12)
    sequences = [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert all(s[0] == cls and s[-1] == sep and 12 <= len(s) <= 32 for s in sequences)
    river = tokenizer("river", add_special_tokens=False)["input_ids"]
    assert [len(s) for s in sequences[:4]] == [32, 32, 32, 12] and sequences[0][1:3] == river * 2  # 100 = 3 x 30 + 10, +2
    assert len(sequences) == 5 and tokens.dtype == np.uint16  # the heading and the 3-letter line are too short
    few = G.encode_texts(tokenizer, ["€ the king of the river city built a bridge in the early season ."], 32, 12)
    assert tokenizer.unk_token_id in few[0].tolist() and len(few[1]) == 2  # one unknown of 17 is kept
    with pytest.raises(ValueError, match=r"no sequence kept .* >= 12 tokens, under 50% of them \[UNK\]"):
        G.encode_texts(tokenizer, ["€ € € € € € € € € € € € € the river"], 32, 12, max_unknown=0.5)
    assert len(G.encode_texts(tokenizer, lines, 32, 12, max_sequences=2)[1]) == 3


def test_every_sequence_has_a_fixed_dual_other_than_itself(corpus):
    assert len(corpus) > 50 and not (corpus.dual == np.arange(len(corpus))).any()
    assert sorted(corpus.dual.tolist()) == list(range(len(corpus)))
    row = corpus[3]
    assert np.array_equal(row["dual_input_ids"], corpus.sequence(int(corpus.dual[3])))


def test_local_corpus_formats_read_alike(tmp_path, config, tokenizer, lines, corpus):
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = tmp_path / "wiki.train.txt"
    text.write_text("\n".join(lines) + "\n")
    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": lines}), parquet)
    for path in (text, parquet):
        other = G.prepare_corpus(config, tokenizer, [str(path)])
        assert np.array_equal(other.tokens, corpus.tokens) and np.array_equal(other.offsets, corpus.offsets), path
    cached = G.prepare_corpus(config, tokenizer, [str(parquet)], cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("corpus-*.npz"))) == 1
    again = G.prepare_corpus(config, tokenizer, [str(parquet)], cache_dir=tmp_path / "cache")
    assert np.array_equal(again.tokens, cached.tokens)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"columns \['body'\], not the hub's 'text' column"):
        G.prepare_corpus(config, tokenizer, [str(wrong)])
    with pytest.raises(ValueError, match="has no known type"):
        G.prepare_corpus(config, tokenizer, [str(tmp_path / "corpus.docx")])
    with pytest.raises(FileNotFoundError, match="not found.*missing.jsonl"):
        G.prepare_corpus(config, tokenizer, [str(tmp_path / "missing.jsonl")], cache_dir=tmp_path / "cache")


def test_masking_draws_fifteen_percent_of_real_tokens_and_never_special_ones(config, tokenizer, corpus):
    torch.manual_seed(0)
    collator = G.make_collator(config, tokenizer, corpus)
    rows = [corpus[i] for i in range(len(corpus))]
    batch = collator(rows)
    real, chosen = batch["attention_mask"].bool(), batch["labels"] != -100
    assert int(chosen.sum()) == math.ceil(0.15 * int(real.sum()))
    original = torch.where(chosen, batch["labels"], batch["input_ids"])
    specials = torch.tensor(tokenizer.all_special_ids)
    assert not (chosen & torch.isin(original, specials)).any() and not (chosen & ~real).any()
    masked = batch["input_ids"][chosen] == tokenizer.mask_token_id
    kept = batch["input_ids"][chosen] == batch["labels"][chosen]
    assert 0.75 < masked.float().mean() < 0.85 and 0.05 < (kept & ~masked).float().mean() < 0.18
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    # the dual is cut to the base batch's length and masked on its own
    assert batch["source_input_ids"].shape[1] <= batch["input_ids"].shape[1]
    assert (batch["source_labels"] != -100).sum() > 0
    # count^-0.7: a token 100 times rarer is 100^0.7 = 25 times likelier to be chosen
    probs = G.masking_probabilities(np.array([0, 1, 100, 5]), 0.7, [3])
    assert probs[0] == probs[1] == 1.0 and probs[2] == pytest.approx(100**-0.7) and probs[3] == 0


def test_masked_lm_evaluation_is_seeded_and_leaves_the_generator_alone(config, tokenizer, teacher, corpus):
    collator = G.make_collator(config, tokenizer, corpus, smoothing=0.0)
    assert torch.equal(collator.token_probs > 0, ~torch.isin(torch.arange(len(tokenizer)),
                                                              torch.tensor(tokenizer.all_special_ids)))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = G.mlm_eval(teacher, corpus, collator, num_sequences=20, batch_size=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert G.mlm_eval(teacher, corpus, collator, num_sequences=20, batch_size=8) == first
    batches = [range(0, 8), range(8, 16), range(16, 20)]  # 15% of each batch's real tokens, rounded up
    assert first["masked_tokens"] == sum(math.ceil(0.15 * sum(len(corpus.sequence(i)) for i in b)) for b in batches)
    assert first["perplexity"] == pytest.approx(math.exp(first["mlm_loss"]))
    assert abs(first["mlm_loss"] - math.log(len(tokenizer))) < 0.5  # a random teacher: about uniform


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("method", G.METHODS)
def test_a_few_steps_lower_the_loss(method, tmp_path, config, tokenizer, teacher, corpus, batch):
    cfg = G.get_config("smoke", teacher=config.teacher, max_length=48, batch_size=8, max_steps=30, lr=3e-3)
    student = G.general_student(cfg, teacher)
    objective = G.make_objective(cfg, method, teacher)

    def fixed_loss(model):  # the same masks, sites and mapped block before and after: only the weights differ
        model.eval()
        torch.manual_seed(0)
        random.seed(0)
        with torch.no_grad():
            return float(objective(model, batch))

    before = fixed_loss(student)
    trained, history = G.distill_general(method, cfg, teacher, tokenizer, corpus, tmp_path / method, device="cpu")
    assert history[-1]["step"] == 30 and (tmp_path / method / "model" / "config.json").is_file()
    after = fixed_loss(trained)
    assert after < 0.9 * before, (before, after)
    reloaded, again = G.distill_general(method, cfg, teacher, tokenizer, corpus, tmp_path / method, device="cpu")
    assert again == history and fixed_loss(reloaded) == pytest.approx(after, rel=1e-5)  # a finished run reloads


def test_the_command_line_dry_run_trains_two_steps_and_fine_tunes(tmp_path, teacher_dir, corpus_file, glue_dir):
    out = tmp_path / "out"
    main(["--preset", "smoke", "--method", "causal", "--dry-run", "--output-dir", str(out), "--device", "cpu",
          "--teacher", str(teacher_dir), "--data-files", str(corpus_file), "--glue", "sst2", "stsb",
          "--glue-dir", str(glue_dir)])
    run = out / "general-causal"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and (run / "model" / "tokenizer.json").is_file()
    train_config = json.loads((run / "train_config.json").read_text())
    assert (train_config["batch_size"], train_config["grad_accum_steps"]) == (2, 2)  # DRY_RUN's global batch of 4
    for task in ("sst2", "stsb"):
        metrics = json.loads((run / "glue" / task / "glue_metrics.json").read_text())
        assert set(metrics) == ({"pearson", "spearman"} if task == "stsb" else {"accuracy"})
    assert len(list((out / "data").glob("corpus-*.npz"))) == 1
    with pytest.raises(SystemExit):
        main(["--preset", "smoke", "--method", "kd"])


# ---------------------------------------------------------------------- settings and plans
def test_settings_follow_the_reference_and_refuse_bad_values():
    paper = G.get_config("paper")
    assert (paper.teacher, paper.student_layers, paper.max_length, paper.batch_size, paper.lr, paper.epochs) == \
        ("bert-base-uncased", (0, 2, 4, 7, 9, 11), 512, 240, 5e-4, 3.0)
    assert paper.weights("causal") == {"ce": 0.25, "mlm": 0.25, "cos": 0.25, "causal_ce": 0.25, "causal_cos": 0.0}
    assert paper.weights("standard") == {"ce": 0.25, "mlm": 0.25, "cos": 0.25, "causal_ce": 0.0, "causal_cos": 0.0}
    train_config = paper.train_config(900_000, 0, "cpu", world_size=1)
    assert (train_config.max_steps, train_config.warmup_steps, train_config.max_grad_norm) == (11_250, 563, 5.0)
    assert train_config.batch_size * train_config.grad_accum_steps == 240 and train_config.schedule == "linear"
    with pytest.raises(ValueError, match="method='kd' is not allowed"):
        paper.weights("kd")
    with pytest.raises(ValueError, match="mask_keep_random=.* summing to 1"):
        G.get_config("paper", mask_keep_random=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="every non-causal loss weight"):
        G.get_config("paper", alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=0.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        G.get_config("paper", alpha=0.5)
    assert G.get_config("paper", dry_run=True).max_steps == 2


def test_resource_plans_of_the_general_distillation():
    from reasoning_lib.resources import check_fits

    plans = {p.name: p for p in G.general_distill_plans()}
    standard, causal = plans["ch7_general_standard"], plans["ch7_general_causal"]
    assert 66_000_000 < standard.trainable_parameters < 68_000_000  # DistilBERT's 6 blocks with the MLM head
    assert 109_000_000 < standard.frozen_parameters < 111_000_000  # BERT base with its MLM head
    assert causal.models[0].passes == 3 and standard.models[0].passes == 1
    assert (causal.global_batch, causal.seq_len, causal.steps) == (240, 512, 11_250)
    assert {f"ch7_glue_{t}_{m}" for t in GL.PAPER_TASKS for m in G.METHODS} <= set(plans)
    assert plans["ch7_glue_sst2_causal"].steps == math.ceil(67_349 * 3 / 32)
    for plan in plans.values():
        check_fits(plan)
        assert plan.processes == 1


# ---------------------------------------------------------------------- GLUE
def test_glue_metrics_on_known_values():
    y, p = [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1]  # TP 2, TN 2, FP 1, FN 1
    assert GL.matthews_corrcoef(p, y) == pytest.approx(1 / 3)
    assert GL.f1_score(p, y) == pytest.approx(2 / 3) and GL.accuracy(p, y) == pytest.approx(4 / 6)
    assert GL.matthews_corrcoef([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(-1.0)
    assert GL.matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # a constant prediction: undefined, reported as 0
    # three classes (Gorodkin): confusion [[1,0,0],[0,1,1],[0,0,1]] -> (3*4 - 5) / sqrt((16 - 6) * (16 - 6))
    assert GL.matthews_corrcoef([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx(0.7)
    x, s = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]  # ties share rank 3.5: the value scipy.stats.spearmanr gives
    assert GL.spearman(x, s) == pytest.approx(8 / math.sqrt(95))
    assert GL.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])
    assert GL.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert GL.task_metrics("stsb", [0.1, 0.5, 0.2], [1.0, 4.0, 2.0]) == {"pearson": pytest.approx(GL.pearson(
        [0.1, 0.5, 0.2], [1.0, 4.0, 2.0])), "spearman": pytest.approx(1.0)}
    assert set(GL.task_metrics("qqp", p, y)) == {"accuracy", "f1"} and set(GL.task_metrics("cola", p, y)) == \
        {"accuracy", "matthews"}
    with pytest.raises(ValueError, match="equal-length"):
        GL.accuracy([1, 0], [1])


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """SST-2 as the hub's columns in .tsv, STS-B in .jsonl, MRPC in .parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("glue")

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))

    (root / "sst2").mkdir()
    for split, n in (("train", 40), ("validation", 16)):
        # GLUE's own files hold bare quotes: read without quoting
        rows = ["sentence\tlabel\tidx"] + [f'{sentence()} "quoted x\t{i % 2}\t{i}' for i in range(n)]
        (root / "sst2" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    (root / "stsb").mkdir()
    for split, n in (("train", 40), ("validation", 16)):
        (root / "stsb" / f"{split}.jsonl").write_text("".join(json.dumps(
            {"sentence1": sentence(), "sentence2": sentence(), "label": round(rng.uniform(0, 5), 2), "idx": i}) + "\n"
            for i in range(n)))
    (root / "mrpc").mkdir()
    for split, n in (("train", 40), ("validation", 16)):
        pq.write_table(pa.table({"sentence1": [sentence() for _ in range(n)], "sentence2": [sentence() for _ in range(n)],
                                 "label": [i % 2 for i in range(n)], "idx": list(range(n))}), root / "mrpc" / f"{split}.parquet")
    return root


def test_glue_loaders_read_local_files_in_the_hubs_columns(glue_dir, tokenizer):
    train, dev = GL.load_glue_task("sst2", tokenizer, glue_dir)
    assert (len(train), len(dev)) == (40, 16) and {e["label"] for e in train} == {0, 1}
    assert train[0]["input_ids"][0] == tokenizer.cls_token_id and set(train[0]["token_type_ids"]) == {0}
    train, dev = GL.load_glue_task("stsb", tokenizer, glue_dir, max_train=10, max_eval=5)
    assert (len(train), len(dev)) == (10, 5) and isinstance(train[0]["label"], float)
    pairs, _ = GL.load_glue_task("mrpc", tokenizer, glue_dir, max_length=8)
    assert max(len(e["input_ids"]) for e in pairs) == 8 and 1 in pairs[0]["token_type_ids"]
    batch = GL.glue_collate(train[:3])
    assert batch["labels"].dtype == torch.float32 and batch["attention_mask"].shape == batch["input_ids"].shape
    with pytest.raises(FileNotFoundError, match=r"has no \['train', 'validation'\] file"):
        GL.load_glue_task("cola", tokenizer, glue_dir)
    with pytest.raises(ValueError, match=r"missing \['sentence2'\]"):
        GL.encode_glue("rte", [{"sentence1": "a", "label": 0}], tokenizer)
    with pytest.raises(ValueError, match="label -1 is not a class"):
        GL.encode_glue("sst2", [{"sentence": "a", "label": -1}], tokenizer)


def test_glue_fine_tuning_reports_the_papers_table(tmp_path, config, teacher, tokenizer, glue_dir):
    student_dir = tmp_path / "student"
    G.general_student(config, teacher).save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)
    glue = GL.get_glue_config("smoke", tasks=("sst2", "stsb", "mrpc"), max_steps=3, batch_size=8)
    results = GL.run_glue(student_dir, tokenizer, glue, tmp_path / "glue", glue_dir, device="cpu")
    assert set(results["sst2"]) == {"accuracy"} and set(results["stsb"]) == {"pearson", "spearman"}
    assert set(results["mrpc"]) == {"accuracy", "f1"} and 0 <= results["mrpc"]["f1"] <= 1
    table = GL.glue_table({"causal": results}, reference=True)
    assert list(table.columns) == ["average", "CoLA", "MNLI", "MRPC", "QNLI", "QQP", "RTE", "SST-2", "STS-B"]
    row = table.loc["causal"]
    assert row["SST-2"] == pytest.approx(100 * results["sst2"]["accuracy"], abs=0.01)
    assert row["MRPC"] == pytest.approx(100 * results["mrpc"]["f1"], abs=0.01)
    assert row["average"] == pytest.approx(np.mean([row["SST-2"], row["STS-B"], row["MRPC"]]), abs=0.02)
    assert table.loc["DIITO, WikiText-103 (reference run)", "average"] == pytest.approx(77.14, abs=0.01)
    again = GL.run_glue(student_dir, tokenizer, glue, tmp_path / "glue", glue_dir, device="cpu")
    assert again == results  # finished runs return their recorded metrics
