"""Knowledge capacity: profiles, QA text and labels, held-out 2-hop splits, entropy, capacity, sizing.

Checked against the reference ``EleutherAI/transformer-reasoning``: seeded tables, labels that decode to the answers,
disjoint held-out sets, exact entropies, C = baseline at L = H and C = E at L = 0, real parameter counts."""
import math

import numpy as np
import pytest
import torch

from reasoning_lib.capacity import (ATTRIBUTES, Capacity, ProfileConfig, Profiles, QADataset, QAEncoder,
                                    QuestionBatch, QuestionSampler, TwoHopSplit, build_llama, build_qa_tokenizer,
                                    capacity_2_1_hop, capacity_from_losses, capacity_from_mean_loss,
                                    config_parameter_count, count_llama_parameters, dataset_entropy, entropy_budget,
                                    eval_questions, generate_profiles, iter_eval_questions, llama_config,
                                    llama_config_for_budget, log2_binomial, one_hop_questions, per_hop_loss, qa_text,
                                    question_losses, questions_to_text, subject_entropies, subject_losses,
                                    synthetic_pools, text_question_losses, ValuePools)
from reasoning_lib.capacity.entropy import birth_date_entropy, birth_date_selection_bits, name_selection_bits
from reasoning_lib.capacity.pools import default_pools
from reasoning_lib.capacity.profiles import hub_profile_id
from reasoning_lib.capacity.sizing import exact_widths
from reasoning_lib.train import TrainConfig, train


@pytest.fixture(scope="module")
def pools():
    return synthetic_pools()


@pytest.fixture(scope="module")
def profiles(pools):
    return generate_profiles(ProfileConfig(200, 4), pools, np.random.default_rng(0))


@pytest.fixture(scope="module")
def tokenizer(profiles):
    return build_qa_tokenizer(profiles, vocab_size=400, num_texts=3000)


@pytest.fixture(scope="module")
def encoder(profiles, tokenizer):
    return QAEncoder(profiles, tokenizer)


@pytest.fixture(scope="module")
def split(profiles):
    return TwoHopSplit.build(profiles.relations, np.random.default_rng(1))


def table(p: Profiles) -> dict:
    return p.to_dataset().to_dict()


# ---------------------------------------------------------------- pools and the generator (generate_profiles.py)

def test_synthetic_pools_are_fixed_and_sized(pools):
    assert pools == synthetic_pools()
    assert pools.sizes() == {"first_names": 40, "last_names": 40, "cities": 20, "universities": 10, "employers": 10}


def test_faker_pools_use_the_provider_lists():
    pytest.importorskip("faker")
    pools = default_pools("faker")
    assert pools.source == "faker"
    assert (len(pools.first_names), len(pools.last_names)) == (690, 1000)
    assert len(set(pools.cities)) == len(pools.cities) > 200


def test_bad_pool_values_are_named():
    good = synthetic_pools()
    with pytest.raises(ValueError, match="'Jo Ann' contains a space"):
        ValuePools(("Jo Ann",), *[getattr(good, k) for k in ("last_names", "cities", "universities", "employers")])
    with pytest.raises(ValueError, match="must start and end with a letter"):
        ValuePools(good.first_names, good.last_names, ("Paris.",), good.universities, good.employers)
    with pytest.raises(ValueError, match="duplicate values"):
        ValuePools(good.first_names, good.last_names, ("Rome", "Rome"), good.universities, good.employers)


def test_same_seed_same_table_other_seed_other_table(pools):
    config = ProfileConfig(60, 17)
    first = generate_profiles(config, pools, np.random.default_rng(7))
    assert table(first) == table(generate_profiles(config, pools, np.random.default_rng(7)))
    assert table(first) != table(generate_profiles(config, pools, np.random.default_rng(8)))


@pytest.mark.parametrize("date_mode", ["uniform", "reference"])
def test_generated_values_respect_the_pools_and_date_range(pools, date_mode):
    p = generate_profiles(ProfileConfig(500, 17, date_mode=date_mode), pools, np.random.default_rng(2))
    assert len(set(p.names)) == 500, "names must be unique"
    assert p.relations.min() >= 0 and p.relations.max() < 500
    days = p.birth_dates.astype(object)
    assert all(d.day <= 28 for d in days)
    assert min(days).year >= 1900 and max(days) <= np.datetime64("2099-12-28").astype(object)
    for attribute in ATTRIBUTES[1:]:
        assert set(p.values[attribute]) <= set(pools.for_attribute(attribute))
    first, middle, last = zip(*(n.split(" ") for n in p.names))
    assert set(first) | set(middle) <= set(pools.first_names) and set(last) <= set(pools.last_names)


def test_uniform_relations_chi_square_and_distinct_fraction(pools):
    n = 3000
    p = generate_profiles(ProfileConfig(n, 4), pools, np.random.default_rng(3))
    counts = np.bincount(p.relations.ravel(), minlength=n)  # 4 draws per person
    expected = 4.0
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert abs(chi2 - (n - 1)) < 5 * math.sqrt(2 * (n - 1)), f"relation targets look non-uniform (chi2={chi2:.0f})"
    distinct = [len(np.unique(p.relations[:, r])) / n for r in range(4)]
    assert np.allclose(distinct, 1 - math.exp(-1), atol=0.02)


def test_bipartite_relations_are_consistent(pools):
    p = generate_profiles(ProfileConfig(100, 17, relation_mode="bipartite"), pools, np.random.default_rng(4))
    rel = {name: p.relations[:, i] for i, name in enumerate(p.relation_names)}
    people = np.arange(100)
    assert np.array_equal(rel["child"][rel["parent"]], people) and np.array_equal(rel["parent"][rel["child"]], people)
    assert np.all((people < 50) != (rel["parent"] < 50)), "a parent must be on the other side"
    assert np.array_equal(rel["grandparent"], rel["parent"][rel["parent"]])
    assert np.array_equal(rel["protege"][rel["mentor"]], people)
    for name in ("best_friend", "worst_enemy", "spouse", "evil_twin"):
        assert np.array_equal(rel[name][rel[name]], people), f"{name} must be symmetric"
        assert np.all(rel[name] != people), f"nobody is their own {name}"
    with pytest.raises(ValueError, match="num_people=5 must be even"):
        ProfileConfig(5, relation_mode="bipartite")


def test_bad_configs_raise_clear_errors(pools):
    with pytest.raises(ValueError, match="num_relations=5"):
        ProfileConfig(10, 5)
    with pytest.raises(ValueError, match="num_people=0"):
        ProfileConfig(0)
    with pytest.raises(ValueError, match="exceeds the 64000 distinct names"):
        generate_profiles(ProfileConfig(70_000), pools, np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        generate_profiles(ProfileConfig(10), pools, 0)
    with pytest.raises(ValueError, match="num_people \\(hosted r17 sets\\)=123"):
        hub_profile_id(123)
    assert hub_profile_id(10000, 4) == "EleutherAI/profiles_dataset_10000_uniform"


def test_dataset_schema_and_disk_round_trip(profiles, tmp_path):
    ds = profiles.to_dataset()
    assert ds.features["birth_date"].dtype == "timestamp[s]"
    assert set(ds.features["parent"]) == {"name", "index"}
    row = ds[5]
    assert row["index"] == 5 and row["bio"] is None
    assert row["parent"]["name"] == profiles.names[row["parent"]["index"]]
    profiles.save(tmp_path / "profiles")
    again = Profiles.load(tmp_path / "profiles")
    assert table(again) == table(profiles)
    assert again.config == profiles.config and again.pools == profiles.pools


# ---------------------------------------------------------------- questions, tokenizer, labels (train/dataset.py)

def test_templates_follow_the_reference_wording(profiles):
    q = QuestionBatch(np.array([3, 3, 3]), np.array([-1, 2, -1]), np.array([4 + 2, 0, 0]))
    texts, answers = questions_to_text(profiles, q)
    name = profiles.names[3]
    friend = profiles.relations[3, 2]
    assert texts[0] == f"What was {name}'s best friend?" and answers[0] == profiles.names[friend]
    assert texts[1] == f"What was {name}'s best friend's birth date?"
    assert answers[1] == str(profiles.birth_dates[friend]) and len(answers[1]) == 10  # YYYY-MM-DD
    assert qa_text(texts[2], answers[2]) == f"Question: What was {name}'s birth date? Answer: {answers[2]}"


def test_tokenizer_round_trips_and_saves(profiles, tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast

    texts, answers = questions_to_text(profiles, QuestionSampler(profiles, (1, 2)).sample(50, np.random.default_rng(0)))
    for q, a in zip(texts, answers):
        ids = tokenizer(qa_text(q, a))["input_ids"]
        assert ids[0] == tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == qa_text(q, a)
    tokenizer.save_pretrained(tmp_path)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert again(qa_text(texts[0], answers[0]))["input_ids"] == tokenizer(qa_text(texts[0], answers[0]))["input_ids"]


def test_assembled_ids_equal_the_tokenizer_and_labels_are_the_answers(profiles, tokenizer, encoder):
    q = QuestionSampler(profiles, (1, 2), hop_ratio=1.0).sample(300, np.random.default_rng(5))
    texts, answers = questions_to_text(profiles, q)
    ids, labels = encoder.rows(q)
    for row, (text, answer) in enumerate(zip(texts, answers)):
        want = tokenizer(qa_text(text, answer))["input_ids"] + [tokenizer.eos_token_id]
        assert ids[row, : len(want)].tolist() == want, f"pre-tokenised pieces differ from the tokenizer on {text!r}"
        target = labels[row][labels[row] != -100]
        assert tokenizer.decode(target) == " " + answer, "labels must be exactly the answer with its leading space"
        assert tokenizer.eos_token_id not in target.tolist()


def test_packed_sequences_label_every_answer_and_truncate(profiles, tokenizer, encoder):
    q = one_hop_questions(profiles.num_people, len(profiles.subjects), people=[0, 1])
    ids, labels = encoder.packed(q, max_len=10_000)
    _, answers = questions_to_text(profiles, q)
    assert ids[0] == tokenizer.bos_token_id and (ids == tokenizer.eos_token_id).sum() == 1 + len(q)
    assert tokenizer.decode(labels[labels != -100]) == "".join(" " + a for a in answers)
    short_ids, short_labels = encoder.packed(q, max_len=40)
    assert len(short_ids) == 40 and np.array_equal(short_labels, labels[:40])


def test_encoder_refuses_a_tokenizer_that_splits_differently(profiles, tokenizer):
    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # pieces would gain a space
    eos = tokenizer.eos_token
    broken = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=eos, eos_token=eos, pad_token=eos)
    with pytest.raises(ValueError, match="pieces tokenise differently"):
        QAEncoder(profiles, broken)


def test_dataset_items_are_reproducible_and_collate(profiles, encoder, split):
    sampler = QuestionSampler(profiles, (1, 2), split=split)
    data = QADataset(encoder, sampler, num_sequences=100, qas_per_sequence=4, max_seq_len=64, seed=3)
    assert torch.equal(data[7]["input_ids"], data[7]["input_ids"]) and len(data[7]["input_ids"]) <= 64
    assert not torch.equal(data[7]["input_ids"], data[8]["input_ids"])
    batch = data.collate([data[0], data[1], data[2]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    with pytest.raises(ValueError, match="num_sequences is required"):
        QADataset(encoder, sampler)
    with pytest.raises(ValueError, match=r"orders=\(3,\)"):
        QuestionSampler(profiles, (3,))


def test_hop_mix_follows_hop_ratio(profiles):
    q = QuestionSampler(profiles, (1, 2), hop_ratio=0.1).sample(11_000, np.random.default_rng(0))
    assert abs((q.relation < 0).mean() - 1 / 11) < 0.01


# ---------------------------------------------------------------- held-out 2-hop splits (train/dataset.py)

def held_out_parts(split, p, r, a):
    """Which raw held-out definitions a tuple touches (independent of TwoHopSplit.category)."""
    b = split.relations_table[p, r]
    return {
        "first_people": split.first_people[p], "relations": split.relations[r],
        "second_attributes": split.second_attributes[a], "person_relation_pairs": split.person_relation_pairs[p, r],
        "second_people": split.second_people[b], "second_person_attribute_pairs": split.second_person_attribute_pairs[b, a],
        "complete_two_hop": np.isin(split.encode(p, r, a), split.complete_two_hop),
    }


def test_split_sizes_follow_the_table(profiles, split):
    n, r, s = 200, 4, 8
    assert split.first_people.sum() == split.second_people.sum() == 4  # ⌊0.02N⌋
    assert split.relations.sum() == 1 and split.second_attributes.sum() == 1
    assert split.person_relation_pairs.sum() == int(0.02 * n * r)
    assert split.second_person_attribute_pairs.sum() == int(0.02 * n * 4)
    assert len(split.complete_two_hop) == int(0.1 * n * r * 4)
    sizes = split.sizes()
    assert sum(sizes.values()) == n * r * s
    assert sizes["first_people"] == 4 * r * s and sizes["relations"] == (n - 4) * s
    assert sizes["complete_two_hop"] == len(split.complete_two_hop)
    again = TwoHopSplit.from_dict(split.to_dict(), profiles.relations)  # what a checkpoint stores
    assert again.sizes() == sizes and np.array_equal(again.person_relation_pairs, split.person_relation_pairs)


def test_training_questions_never_touch_held_out_sets(profiles, split):
    q = QuestionSampler(profiles, (1, 2), split=split).sample(20_000, np.random.default_rng(9))
    two = q[q.relation >= 0]
    for name, hit in held_out_parts(split, two.person, two.relation, two.subject).items():
        assert not hit.any(), f"a 2-hop training question leaks into held-out set {name!r}"
    p, r, a = split.decode(split.complete_two_hop)
    parts = held_out_parts(split, p, r, a)
    assert not any(parts[k].any() for k in parts if k != "complete_two_hop"), "complete-two-hop uses a held-out part"
    one = q[q.relation < 0]
    assert split.first_people[one.person].any(), "all 1-hop facts (held-out people too) stay training data"


def test_a_one_hop_only_draw_samples_no_two_hop_question(profiles, split):
    assert len(split.sample("train", 0, np.random.default_rng(0))) == 0
    q = QuestionSampler(profiles, (1,), split=split).sample(50, np.random.default_rng(0))
    assert len(q) == 50 and (q.relation < 0).all()


def test_each_eval_mode_yields_its_own_questions(split):
    modes = dict(iter_eval_questions(split, 200, seed=0))
    assert len(modes) == 9 and all(len(q) == 200 for q in modes.values())
    for mode, q in modes.items():
        if mode == "train_onehop":
            assert (q.relation < 0).all()
            continue
        parts = held_out_parts(split, q.person, q.relation, q.subject)
        if mode == "train_twohop":
            assert not any(v.any() for v in parts.values())
        else:
            assert parts[mode.removeprefix("eval_").replace("_questions", "")].all(), mode
    again = eval_questions(split, "eval_second_people", 200, np.random.default_rng([0, 5]))
    assert np.array_equal(again.person, modes["eval_second_people"].person)


# ---------------------------------------------------------------- entropy (measure_entropy.py)

@pytest.fixture(scope="module")
def hand_profiles(pools):
    """4 people, r4: every quantity below is computed by hand."""
    return Profiles(
        names=np.array(["Ab Cd Ef", "Ab Gh Ef", "Ij Cd Kl", "Ab Cd Kl"], dtype=object),
        birth_dates=np.array(["1950-01-01", "1950-01-01", "1960-02-03", "1970-03-04"], dtype="datetime64[D]"),
        values={"birth_city": np.array(["X", "Y", "X", "X"], dtype=object),
                "university": np.array(["U", "U", "U", "U"], dtype=object),
                "employer": np.array(["E", "F", "G", "H"], dtype=object)},
        relations=np.array([[1, 0, 3, 3], [1, 2, 3, 0], [2, 1, 3, 1], [0, 3, 3, 2]]),
        relation_names=("parent", "child", "best_friend", "worst_enemy"),
        config=ProfileConfig(4, date_mode="reference"), pools=pools,
    )


def test_log2_binomial_matches_big_integers():
    for n, k in [(73048, 500), (10**6, 12345), (50, 0), (50, 50)]:
        assert log2_binomial(n, k) == pytest.approx(math.log2(math.comb(n, k)) if k not in (0, n) else 0.0, abs=1e-6)
    assert birth_date_selection_bits(73048, 3) == pytest.approx(math.log2(math.comb(73048, 3)))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        log2_binomial(3, 4)
    assert name_selection_bits(4, 8, "exact") == pytest.approx(math.log2(70))
    assert name_selection_bits(4, 8, "optimal") == pytest.approx(4 * 3 - 4 * 2)
    with pytest.raises(ValueError, match="num_people=9 distinct names cannot come from name_space=8"):
        name_selection_bits(9, 8)


def test_observed_entropies_by_hand(hand_profiles):
    h = subject_entropies(hand_profiles, support="observed")
    assert h["birth_date"] == pytest.approx(math.log2(3)) and h["birth_city"] == 1.0 and h["university"] == 0.0
    assert h["employer"] == 2.0
    assert [h[r] for r in ("parent", "child", "best_friend", "worst_enemy")] == pytest.approx(
        [math.log2(3), math.log2(4), 0.0, math.log2(4)])
    ind = subject_entropies(hand_profiles, scheme="independent", support="observed")
    # parent targets 1, 1, 2, 0 -> names {Ab Gh Ef, Ij Cd Kl, Ab Cd Ef}: first {Ab, Ij}, middle {Gh, Cd}, last {Ef, Kl}
    assert ind["parent"] == pytest.approx(3.0) and ind["birth_date"] == pytest.approx(math.log2(73048))
    m = 2 * 2 * 2  # distinct first {Ab, Ij}, middle {Cd, Gh}, last {Ef, Kl}
    b = entropy_budget(hand_profiles, selection="optimal", support="observed")
    assert b.name_selection_bits == pytest.approx(4 * math.log2(m) - 4 * math.log2(4))
    assert b.birth_date_selection_bits == pytest.approx(math.log2(math.comb(73048, 3)))
    assert b.dataset_bits(1) == pytest.approx(4 * sum(h.values()) + b.baseline_bits)
    enum = entropy_budget(hand_profiles, selection="enumerate", support="observed")
    assert enum.name_selection_bits == pytest.approx(4 * math.log2(m))
    assert entropy_budget(hand_profiles, selection="exact", support="observed").name_selection_bits == pytest.approx(
        math.log2(math.comb(m, 4)))
    assert entropy_budget(hand_profiles, selection="independent", support="observed").baseline_bits == 0.0
    big = entropy_budget(hand_profiles, scheme="2-hop-big-hash", selection="enumerate", support="observed")
    assert big.dataset_bits(2) == pytest.approx(4 * 4 * sum(h.values()) + enum.baseline_bits)  # E₂ = R·N·ΣH + S


def test_generating_entropies_use_the_pools(profiles, pools):
    h = subject_entropies(profiles)
    assert h["birth_city"] == math.log2(20) and h["university"] == math.log2(10) and h["parent"] == math.log2(200)
    assert h["birth_date"] == pytest.approx(math.log2(200 * 12 * 28))
    reference = birth_date_entropy(ProfileConfig(10, date_mode="reference"))
    assert 15.9 < reference < math.log2(67_200), "clamping to day 28 makes dates non-uniform"
    b = entropy_budget(profiles)
    assert b.name_selection_bits == pytest.approx(200 * math.log2(40 * 40 * 40) - 200 * math.log2(200))
    assert b.birth_date_selection_bits == 0.0
    with pytest.raises(ValueError, match="use support='observed'"):
        subject_entropies(Profiles(profiles.names, profiles.birth_dates, profiles.values, profiles.relations,
                                   profiles.relation_names))
    with pytest.raises(ValueError, match="scheme='best'"):
        dataset_entropy(profiles, scheme="best")


# ---------------------------------------------------------------- capacity (measure_capacity.py)

@pytest.mark.parametrize("scheme", ["optimal", "2-hop-big-hash", "2-hop-double", "independent"])
@pytest.mark.parametrize("hops", [1, 2])
def test_capacity_is_the_entropy_at_zero_loss_and_the_baseline_at_uniform_loss(hand_profiles, scheme, hops):
    b = entropy_budget(hand_profiles, scheme=scheme, support="observed")
    zero = capacity_from_losses(b, {s: 0.0 for s in b.subject_bits}, hops=hops)
    assert zero.total_bits == pytest.approx(b.dataset_bits(hops))
    uniform = capacity_from_losses(b, dict(b.subject_bits), hops=hops)
    assert uniform.total_bits == pytest.approx(b.baseline_bits)
    assert capacity_from_losses(b, dict(b.subject_bits), hops=hops, incremental=True).total_bits == pytest.approx(0.0)


def test_capacity_is_monotone_in_each_loss(hand_profiles):
    b = entropy_budget(hand_profiles, support="observed")
    for subject in b.subject_bits:
        values = [capacity_from_losses(b, {s: (x if s == subject else 1.0) for s in b.subject_bits}).total_bits
                  for x in np.linspace(0, 6, 25)]
        assert np.all(np.diff(values) <= 1e-9), f"capacity rises with the loss of {subject}"


def test_capacity_per_subject_formula_by_hand(hand_profiles):
    b = entropy_budget(hand_profiles, support="observed")
    losses = {s: 0.5 for s in b.subject_bits}
    losses["worst_enemy"] = 3.0  # above its entropy log2(4) = 2
    c = capacity_from_losses(b, losses, num_parameters=1000)
    assert c.per_subject_bits["employer"] == pytest.approx(4 * (2.0 - 0.5))
    assert c.per_subject_bits["university"] == pytest.approx(4 * (0.0 - 0.5)), "attributes may go negative"
    assert c.per_subject_bits["worst_enemy"] == pytest.approx((b.name_selection_bits - 4 * 1.0) / 4)
    assert c.per_subject_bits["child"] == pytest.approx(4 * 1.5 + b.name_selection_bits / 4)
    assert c.per_subject_bits["birth_date"] == pytest.approx(4 * (math.log2(3) - 0.5) + b.birth_date_selection_bits)
    assert c.bits_per_parameter == pytest.approx(c.total_bits / 1000)
    clipped = capacity_from_losses(b, losses, incremental=True)
    assert clipped.per_subject_bits["university"] == 0.0 and clipped.per_subject_bits["worst_enemy"] == 0.0
    with pytest.raises(ValueError, match="lacks subjects \\['parent'"):
        capacity_from_losses(b, {s: 0.0 for s in ATTRIBUTES})
    with pytest.raises(ValueError, match="bits_per_parameter needs num_parameters"):
        Capacity(1.0).bits_per_parameter


def test_average_path_and_2_1_hop(hand_profiles):
    b = entropy_budget(hand_profiles, support="observed")
    total_h, k = sum(b.subject_bits.values()), len(b.subject_bits)
    assert capacity_from_mean_loss(b, 0.25).total_bits == pytest.approx(4 * (total_h - k * 0.25) + b.baseline_bits)
    high = total_h / k + 1
    assert capacity_from_mean_loss(b, high).total_bits == pytest.approx(b.baseline_bits - 4 * k)
    assert capacity_from_mean_loss(b, high, incremental=True).total_bits == 0.0, "incremental must be honoured"
    one = {s: 0.0 for s in b.subject_bits}
    both = capacity_2_1_hop(b, dict(b.subject_bits), one)
    assert both.total_bits == pytest.approx(b.baseline_bits + 4 * total_h)


def test_two_hop_double_root():
    for h in (1.0, 5.0, 12.0):
        for loss in np.linspace(0, h, 7):
            per_hop = per_hop_loss(loss, h)
            p_x, n = 2.0 ** -per_hop, 2.0 ** h
            assert 0 <= p_x <= 1 and per_hop <= h + 1e-12
            if per_hop < h:
                assert p_x ** 2 + (1 - p_x) / n == pytest.approx(2.0 ** -loss, abs=1e-9)
        assert per_hop_loss(0.0, h) == pytest.approx(0.0) and per_hop_loss(h + 3, h) == h


def test_two_hop_double_multiplier_is_not_sticky(hand_profiles):
    b = entropy_budget(hand_profiles, scheme="2-hop-double", support="observed")
    m = b.multipliers(2)
    assert [m[s] for s in ATTRIBUTES] == [1, 1, 1, 1] and m["parent"] == m["worst_enemy"] == 2


# ---------------------------------------------------------------- sizing (train_utils.py)

@pytest.mark.parametrize("budget,layers,hidden,real", [
    (500_000, 4, 48, 0.44e6), (1_000_000, 4, 112, 1.48e6), (2_000_000, 12, 96, 2.35e6), (10_000_000, 4, 448, 15.5e6)])
def test_reference_rule_matches_the_reference_size_table(budget, layers, hidden, real):
    config = llama_config_for_budget(budget, layers, vocab_size=3000)
    assert config.hidden_size == hidden and config.num_attention_heads == hidden // 16
    assert config.intermediate_size == 4 * hidden
    assert config_parameter_count(config) == pytest.approx(real, rel=0.01)


@pytest.mark.parametrize("budget,layers", [(60_000, 2), (150_000, 2), (400_000, 4), (2_000_000, 4)])
def test_exact_mode_hits_the_budget_and_the_built_model_agrees(budget, layers):
    config = llama_config_for_budget(budget, layers, vocab_size=300, mode="exact")
    counted = config_parameter_count(config)
    assert abs(counted - budget) <= 1.5 * layers * config.hidden_size
    assert config.hidden_size % 16 == 0 and 2 * config.hidden_size <= config.intermediate_size <= 8 * config.hidden_size
    if budget <= 400_000:
        model = build_llama(config)
        assert sum(p.numel() for p in model.parameters()) == counted, "formula and instantiated model disagree"
        assert model.get_input_embeddings().weight.data_ptr() != model.get_output_embeddings().weight.data_ptr()


def test_sizing_errors_are_named():
    with pytest.raises(ValueError, match="hidden_size=40 must be a positive multiple"):
        llama_config(300, 40, 2)
    with pytest.raises(ValueError, match="mode='best'"):
        llama_config_for_budget(10**6, 4, mode="best")
    with pytest.raises(ValueError, match="below the smallest model"):
        exact_widths(1000, 2, 300)
    assert count_llama_parameters(3000, 112, 448, 4) == 2 * 3000 * 112 + 4 * (16 * 112**2 + 2 * 112) + 112


# ---------------------------------------------------------------- losses and a tiny training run (train_utils.py)

def test_question_losses_sum_the_answer_tokens(profiles, tokenizer, encoder):
    torch.manual_seed(0)
    model = build_llama(llama_config(len(tokenizer), 32, 1)).eval()
    q = QuestionSampler(profiles, (1, 2), hop_ratio=1.0).sample(12, np.random.default_rng(1))
    bits = question_losses(model, encoder, q, batch_size=5)
    ids, labels = encoder.rows(q[:1])
    n_answer = int((labels != -100).sum())
    mean_nats = model(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(labels)).loss.item()
    assert bits[0] == pytest.approx(mean_nats * n_answer / math.log(2), rel=1e-4), "per answer = mean token CE × tokens"
    texts, answers = questions_to_text(profiles, q)
    assert np.allclose(text_question_losses(model, tokenizer, list(zip(texts, answers))), bits, rtol=1e-4)


def test_tiny_llama_lowers_its_answer_loss(pools):
    torch.manual_seed(0)
    world = generate_profiles(ProfileConfig(12, 4), pools, np.random.default_rng(11))
    tokenizer = build_qa_tokenizer(world, vocab_size=320, num_texts=1500)
    encoder = QAEncoder(world, tokenizer)
    facts = one_hop_questions(world.num_people, len(world.subjects))
    model = build_llama(llama_config(len(tokenizer), 32, 2, special_ids={"pad_token_id": tokenizer.pad_token_id}))
    before = subject_losses(model, encoder, facts)
    data = QADataset(encoder, facts, qas_per_sequence=1)
    config = TrainConfig(max_steps=80, batch_size=16, lr=1e-2, progress=False, device="cpu", log_every=80)
    train(model, data, config, collate_fn=data.collate)
    after = subject_losses(model, encoder, facts)
    # ≈90 bits per answer at init; ≈6-8 after 80 steps (the answers' entropies sum to ≈41 bits over 8 subjects)
    assert np.mean(list(after.values())) < 0.25 * np.mean(list(before.values())), (before, after)
    budget = entropy_budget(world)
    capacity = capacity_from_losses(budget, after, num_parameters=sum(p.numel() for p in model.parameters()))
    assert capacity.total_bits > capacity_from_losses(budget, before).total_bits


def test_a_restricted_budget_shares_the_name_set_among_the_relations_left(hand_profiles):
    full = entropy_budget(hand_profiles, scheme="2-hop-big-hash", support="observed")
    held = full.restricted([s for s in full.subject_bits if s not in ("birth_date", "worst_enemy")])
    assert held.relation_names == full.relation_names and held.present_relations == ("parent", "child", "best_friend")
    assert held.baseline_bits == pytest.approx(full.name_selection_bits), "no S_bd without the birth date"
    assert held.dataset_bits(2) == pytest.approx(4 * 4 * sum(held.subject_bits.values()) + held.baseline_bits)
    uniform = capacity_from_losses(held, dict(held.subject_bits), hops=2)
    assert uniform.total_bits == pytest.approx(held.baseline_bits), "S_name split over the 3 relations left"
    assert uniform.per_subject_bits["parent"] == pytest.approx(full.name_selection_bits / 3)
    with pytest.raises(ValueError, match="none of this budget's subjects"):
        full.restricted(["bio"])
