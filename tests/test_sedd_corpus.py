"""SEDD's corpora at scale: the memory-mapped token file (exact contents, blocks, resume, bounded memory, ranks),
held-out documents, and the zero-shot benchmarks of Table 1 (detokenisers, local loaders, packing)."""
import json
import pickle
import random
import tracemalloc

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hub_layout import gpt2_tokenizer
from reasoning_lib.data import reviews
from reasoning_lib.sedd import corpus, data, zero_shot
from reasoning_lib.sedd.corpus import TokenBlocks, build_token_file, read_metadata, token_dtype, write_token_file
from reasoning_lib.sedd.training import get_config, train_sedd

GPT2_EOT = 50256


@pytest.fixture(scope="module")
def review_tok():
    return data.build_review_tokenizer()


def random_documents(num: int, seed: int = 0, low: int = 5, high: int = 60) -> list[str]:
    """Documents of review words (every word in the review vocabulary), of varied lengths."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(reviews.WORDS) for _ in range(rng.randint(low, high))) for _ in range(num)]


def expected_stream(tokenizer, texts) -> list[int]:
    """The token file's contents, written out by hand: each document's ids, then end-of-text."""
    out = []
    for text in texts:
        out += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return out


def file_ids(bin_path) -> np.ndarray:
    meta = read_metadata(bin_path)
    return np.fromfile(bin_path, dtype=meta["dtype"]).astype(np.int64)


# ----------------------------------------------------------------------------------------------- the token file
def test_token_file_is_every_document_then_end_of_text_in_uint16(tmp_path):
    from datasets import Dataset

    tok = gpt2_tokenizer()
    texts = ["Hello world", "", "Score entropy discrete diffusion.\n\nA second paragraph, naïve café.", " 1 2 * 3 4||"]
    documents = Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    meta = write_token_file(tmp_path / "train.bin", documents, tok, {"dataset": "toy"}, batch_documents=3,
                            progress=False)
    want = expected_stream(tok, texts)
    assert want[:3] == [15496, 995, GPT2_EOT] and want[3] == GPT2_EOT  # the README's ids; "" is end-of-text alone
    assert file_ids(tmp_path / "train.bin").tolist() == want
    assert (tmp_path / "train.bin").stat().st_size == 2 * len(want)  # uint16: two bytes a token
    assert meta["dtype"] == "uint16" and meta["finished"] and meta["num_tokens"] == len(want)
    assert meta["documents_done"] == meta["num_documents"] == 4 and meta["max_id"] == max(want)
    assert meta["tokenizer"]["vocab_size"] == 50257 and meta["tokenizer"]["eos_id"] == GPT2_EOT
    assert json.loads((tmp_path / "train.json").read_text()) == meta  # the record on disk


def test_blocks_are_contiguous_cuts_of_the_stream(tmp_path, review_tok):
    texts = random_documents(40)
    write_token_file(tmp_path / "t.bin", texts, review_tok, {"dataset": "toy"}, progress=False)
    stream = torch.tensor(expected_stream(review_tok, texts))
    blocks = TokenBlocks(tmp_path / "t.bin", 16)
    assert len(blocks) == len(stream) // 16 and blocks.num_tokens == 16 * len(blocks)  # remainder dropped
    for i in (0, 1, len(blocks) - 1):
        row = blocks[i]["input_ids"]
        assert row.dtype == torch.long and torch.equal(row, stream[16 * i:16 * (i + 1)])
    assert torch.equal(blocks[-1]["input_ids"], blocks[len(blocks) - 1]["input_ids"])
    assert torch.equal(blocks[2:5], stream[32:80].view(3, 16))
    assert torch.equal(blocks[0:6:2], torch.stack([stream[0:16], stream[32:48], stream[64:80]]))
    with pytest.raises(IndexError, match="out of range"):
        blocks[len(blocks)]
    first = blocks.take(3)
    assert len(first) == 3 and torch.equal(first.tensor(), stream[:48].view(3, 16)) and first.max_id == blocks.max_id
    with pytest.raises(ValueError, match=f"holds {len(blocks)} blocks of 16 tokens"):
        blocks.take(len(blocks) + 1)
    clone = pickle.loads(pickle.dumps(first))  # a DataLoader worker reopens the file instead of copying it
    assert clone._tokens is None and torch.equal(clone[1]["input_ids"], first[1]["input_ids"])


class Interrupt(Exception):
    pass


def test_interrupted_tokenisation_resumes_to_the_identical_file(tmp_path, review_tok):
    texts = random_documents(50, seed=1)
    options = {"batch_documents": 4, "record_every": 8, "progress": False}
    write_token_file(tmp_path / "whole.bin", texts, review_tok, {"dataset": "toy"}, **options)

    def stop_after_16(record):
        if record["documents_done"] >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        write_token_file(tmp_path / "part.bin", texts, review_tok, {"dataset": "toy"}, on_record=stop_after_16,
                         **options)
    meta = read_metadata(tmp_path / "part.bin")
    assert (meta["documents_done"], meta["finished"]) == (16, False)
    assert meta["num_tokens"] == len(expected_stream(review_tok, texts[:16]))
    with pytest.raises(FileNotFoundError, match="unfinished"):
        TokenBlocks(tmp_path / "part.bin", 8)
    with open(tmp_path / "part.bin", "ab") as handle:  # a batch written after the last record, then a crash
        handle.write(b"\x07\x00" * 5)
    done = []
    write_token_file(tmp_path / "part.bin", texts, review_tok, {"dataset": "toy"},
                     on_record=lambda r: done.append(r["documents_done"]), **options)
    assert done[0] == 24  # it continued from document 16, not from the start
    assert (tmp_path / "part.bin").read_bytes() == (tmp_path / "whole.bin").read_bytes()
    assert read_metadata(tmp_path / "part.bin")["num_tokens"] == read_metadata(tmp_path / "whole.bin")["num_tokens"]


def test_a_file_from_other_data_or_tokenizer_is_refused(tmp_path, review_tok):
    texts = random_documents(5)
    write_token_file(tmp_path / "t.bin", texts, review_tok, {"dataset": "a"}, progress=False)
    with pytest.raises(ValueError, match="other data or another tokenizer.*source"):
        write_token_file(tmp_path / "t.bin", texts, review_tok, {"dataset": "b"}, progress=False)
    with pytest.raises(ValueError, match="num_documents"):
        write_token_file(tmp_path / "t.bin", texts + ["the"], review_tok, {"dataset": "a"}, progress=False)


def test_host_memory_stays_bounded_while_tokenising(tmp_path, review_tok):
    from datasets import Dataset

    texts = random_documents(1500, seed=2, low=200, high=600)  # ~600k tokens
    documents = Dataset.from_dict({"text": texts})
    del texts
    tracemalloc.start()
    meta = write_token_file(tmp_path / "t.bin", documents, review_tok, {"dataset": "big"}, batch_documents=16,
                            progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the old in-memory pipeline held 36 B a token as Python lists, then 8 B as an int64 tensor; the file holds 2 B
    assert meta["num_tokens"] > 500_000
    assert peak < 8 * meta["num_tokens"] / 4, f"peak {peak / 1e6:.2f} MB for {meta['num_tokens']:,} tokens"


def test_a_vocabulary_beyond_uint16_takes_uint32(tmp_path):
    assert token_dtype(50257) == "uint16" and token_dtype(65536) == "uint16" and token_dtype(65537) == "uint32"
    with pytest.raises(ValueError, match="holds ids up to 65535 but the tokenizer has 70,000 ids; use dtype='uint32'"):
        token_dtype(70_000, "uint16")
    vocab = {f"w{i}": i for i in range(69_999)} | {"<eos>": 69_999}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    big = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="w0")
    meta = write_token_file(tmp_path / "big.bin", ["w3 w66000", "w69998"], big, {"dataset": "big"}, progress=False)
    assert meta["dtype"] == "uint32" and file_ids(tmp_path / "big.bin").tolist() == [3, 66000, 69999, 69998, 69999]
    assert TokenBlocks(tmp_path / "big.bin", 2)[1]["input_ids"].tolist() == [69999, 69998]
    with pytest.raises(ValueError, match="dtype='uint16'"):
        write_token_file(tmp_path / "small.bin", ["w1"], big, {"dataset": "big"}, dtype="uint16", progress=False)


def test_other_ranks_wait_for_rank_0_and_never_load_the_data(tmp_path, review_tok, monkeypatch):
    path, texts = tmp_path / "t.bin", random_documents(6)

    def must_not_load():
        raise AssertionError("a rank other than 0 loaded the dataset")

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TimeoutError, match="rank 1 waited 0s for rank 0"):
        build_token_file(path, must_not_load, review_tok, {"dataset": "toy"}, wait_timeout_s=0)
    assert not path.exists()  # it wrote nothing
    monkeypatch.setenv("RANK", "0")
    loads = []
    build_token_file(path, lambda: loads.append(1) or (texts, {"split": "train"}), review_tok, {"dataset": "toy"},
                     progress=False)
    build_token_file(path, must_not_load, review_tok, {"dataset": "toy"})  # finished: reused without loading
    monkeypatch.setenv("RANK", "1")
    meta = build_token_file(path, must_not_load, review_tok, {"dataset": "toy"}, wait_timeout_s=0)
    assert loads == [1] and meta["finished"] and meta["source"] == {"dataset": "toy", "split": "train"}
    with pytest.raises(ValueError, match="was made with"):
        build_token_file(path, must_not_load, review_tok, {"dataset": "other"}, wait_timeout_s=0)


# ---------------------------------------------------------------------------------------- prepare_corpus, held out
@pytest.fixture
def review_tok_folder(tmp_path, review_tok):
    folder = tmp_path / "tokenizer"
    review_tok.save_pretrained(folder)
    return str(folder)


def test_prepare_corpus_holds_out_the_validation_split(tmp_path, review_tok, review_tok_folder, capsys):
    from datasets import Dataset, DatasetDict

    train_texts, valid_texts = random_documents(60, seed=3), random_documents(20, seed=4)
    DatasetDict({"train": Dataset.from_dict({"text": train_texts}),
                 "validation": Dataset.from_dict({"text": valid_texts})}).save_to_disk(tmp_path / "toy")
    tok, train, test, num_states = data.prepare_corpus(str(tmp_path / "toy"), review_tok_folder, 10, 4, 12, 0,
                                                       cache_dir=tmp_path / "cache", progress=False)
    assert "held-out blocks from its 'validation' split (20 documents)" in capsys.readouterr().out
    assert isinstance(train, TokenBlocks) and len(train) == 10 and num_states == len(review_tok) + 1
    assert torch.equal(train[:], torch.tensor(expected_stream(review_tok, train_texts)[:120]).view(10, 12))
    assert torch.equal(test, torch.tensor(expected_stream(review_tok, valid_texts)[:48]).view(4, 12))
    assert read_metadata(train.path)["source"]["split"] == "train"
    assert train.path.parent.parent.parent == tmp_path / "cache"  # <cache>/<corpus>/<tokenizer>/train.bin


def test_prepare_corpus_holds_out_the_last_train_documents_when_there_is_no_validation(tmp_path, review_tok,
                                                                                      review_tok_folder, capsys,
                                                                                      monkeypatch):
    from datasets import Dataset

    texts = random_documents(50, seed=5)
    Dataset.from_dict({"text": texts}).save_to_disk(tmp_path / "owt")
    args = (str(tmp_path / "owt"), review_tok_folder, 8, 3, 10, 0)
    _, train, test, _ = data.prepare_corpus(*args, cache_dir=tmp_path / "cache", held_out_documents=12,
                                            progress=False)
    out = capsys.readouterr().out
    assert "no 'validation' split (splits: train): holding out its last 12 'train' documents (38..49)" in out
    train_meta, held_meta = read_metadata(train.path), read_metadata(train.path.with_name("held_out.bin"))
    assert train_meta["source"]["documents"] == [0, 38] and held_meta["source"]["documents"] == [38, 50]
    assert file_ids(train.path).tolist() == expected_stream(review_tok, texts[:38])  # disjoint documents
    assert file_ids(train.path.with_name("held_out.bin")).tolist() == expected_stream(review_tok, texts[38:])
    assert torch.equal(test, torch.tensor(expected_stream(review_tok, texts[38:])[:30]).view(3, 10))
    with monkeypatch.context() as patch:
        patch.setattr(data, "open_corpus", lambda *a, **k: pytest.fail("re-loaded a tokenised corpus"))
        again = data.prepare_corpus(*args, cache_dir=tmp_path / "cache", held_out_documents=12, progress=False)
        assert torch.equal(again[1][:], train[:]) and torch.equal(again[2], test)
        with pytest.raises(ValueError, match="blocks of 10 tokens, not 100,000"):
            data.prepare_corpus(str(tmp_path / "owt"), review_tok_folder, 100_000, 3, 10, 0,
                                cache_dir=tmp_path / "cache", held_out_documents=12, progress=False)
    with pytest.raises(ValueError, match="50 'train' documents, not more than held_out_documents=50"):
        data.prepare_corpus(*args, cache_dir=tmp_path / "other", held_out_documents=50, progress=False)


def test_prepare_corpus_reads_local_data_files(tmp_path, review_tok, review_tok_folder):
    texts = random_documents(30, seed=6)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "url": "x"}) + "\n" for t in texts))
    _, train, test, _ = data.prepare_corpus("local-owt", review_tok_folder, 4, 2, 8, 0, cache_dir=tmp_path / "cache",
                                            data_files={"train": str(tmp_path / "train.jsonl")},
                                            held_out_documents=5, progress=False)
    assert torch.equal(train[:], torch.tensor(expected_stream(review_tok, texts[:25])[:32]).view(4, 8))
    assert torch.equal(test, torch.tensor(expected_stream(review_tok, texts[25:])[:16]).view(2, 8))


def test_reviews_corpus_is_unchanged():
    tok, train, test, num_states = data.prepare_corpus("reviews", "reviews", 10, 5, 24, 0)
    assert train.shape == (10, 24) and test.shape == (5, 24) and num_states == len(tok) + 1
    assert torch.equal(torch.cat([train, test]), data.review_canvases(tok, 15, 24, 0))


def test_offline_hub_corpus_fails_with_a_hint(tmp_path, review_tok_folder):
    with pytest.raises(FileNotFoundError, match="could not load corpus 'openwebtext'.*data_files="):
        data.prepare_corpus("openwebtext", review_tok_folder, 4, 2, 8, 0, cache_dir=tmp_path, progress=False)


def test_train_sedd_trains_on_token_blocks(tmp_path, review_tok):
    write_token_file(tmp_path / "t.bin", [r.text for r in reviews.make_reviews(80, 0)], review_tok,
                     {"dataset": "reviews"}, progress=False)
    blocks = TokenBlocks(tmp_path / "t.bin", 16).take(64)
    config = get_config("smoke", length=16, num_sequences=64, max_steps=3, batch_size=8, warmup_steps=1)
    model, history = train_sedd(config, blocks, len(review_tok) + 1, tmp_path / "run", device="cpu")
    assert history[-1]["step"] == 3 and np.isfinite(history[-1]["loss"]) and model.config.vocab_size == 43
    with pytest.raises(ValueError, match=f"sequence ids reach {blocks.max_id} but the graph has 10 states"):
        train_sedd(config, blocks, 10, tmp_path / "run2", device="cpu")


# ------------------------------------------------------------------------------------------------ zero-shot
@pytest.mark.parametrize("name, raw, want", [
    ("wikitext", 'The game \'s 1 @,@ 000 players @-@ in ( Japan ) , said " hello " .',
     'The game\'s 1,000 players-in (Japan), said "hello" .'),
    ("wikitext", " = = Gameplay = = \n", " == Gameplay ==\n"),
    ("wikitext", " it is 3 @.@ 5 ° C ; the players ' union : yes ! \n", " it is 3.5°C; the players' union: yes!\n"),
    ("ptb", "the firm 's chief said they do n't expect $ N million for N N <unk> \\/ share",
     "the firm's chief said they don't expect $1 million for 1 1 ? / share"),
    ("lm1b", 'He said : " I \'m fine , thanks " ( really ) , see http : / / t.co / x or pay $ 5 .',
     'He said: "I\'m fine, thanks" (really), see http://t.co/x or pay $5.'),
    ("lm1b", "Is it £ 3 ? Yes ! It is . Really !", "Is it £3? Yes! It is. Really!"),
    ("lambada", "  \u201cHi,\u201d she said.  ", '\n"Hi," she said.'),
])
def test_detokenisers_undo_each_corpus_tokenisation(name, raw, want):
    assert getattr(zero_shot, f"detokenize_{name}")(raw) == want


@pytest.fixture
def benchmark_files(tmp_path):
    """One tiny file per benchmark, in its own layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {}
    files["lambada"] = tmp_path / "lambada_test.jsonl"
    passages = ["\u201cthe plot was good\u201d she said and the movie is great", "the cast was so clever " * 20]
    files["lambada"].write_text("".join(json.dumps({"text": t}) + "\n" for t in passages))
    for name in ("wikitext2", "wikitext103"):
        files[name] = tmp_path / f"{name}.test.raw"
        files[name].write_text(" = the movie = \n\n the plot was very dull , but the music felt great . \n")
    files["ptb"] = tmp_path / "ptb.test.parquet"
    pq.write_table(pa.table({"sentence": ["the movie was n't good", "the cast is <unk> clever"]}), files["ptb"])
    files["lm1b"] = tmp_path / "lm1b.test.txt"
    files["lm1b"].write_text("the plot was good , but the music felt bad .\nthe cast 's acting is great !\n")
    return {k: str(v) for k, v in files.items()}


@pytest.mark.parametrize("name", list(zero_shot.BENCHMARKS))
def test_benchmark_loaders_pack_local_files_like_the_reference(name, benchmark_files, review_tok):
    spec = zero_shot.BENCHMARKS[name]
    raw = zero_shot.benchmark_texts(name, data_files=benchmark_files[name])
    assert len(raw) == {"lambada": 2, "ptb": 2, "lm1b": 2}.get(name, 3)
    if spec.keep_linebreaks:  # WikiText rows keep their line break, as on the hub
        assert raw[0] == " = the movie = \n" and raw[1] == "\n"
    stream = expected_stream(review_tok, [spec.detokenize(t) for t in raw])
    blocks = zero_shot.benchmark_blocks(name, review_tok, 4, data_files=benchmark_files[name])
    rows = len(stream) // 4
    assert blocks.real is None and blocks.num_documents == len(raw) and blocks.num_dropped == len(stream) - 4 * rows
    assert torch.equal(blocks.input_ids, torch.tensor(stream[:4 * rows]).view(rows, 4))
    assert blocks.num_tokens == 4 * rows


def test_padded_benchmark_rows_mark_their_real_tokens(benchmark_files, review_tok):
    blocks = zero_shot.benchmark_blocks("lambada", review_tok, 64, data_files=benchmark_files["lambada"], pack=False)
    lengths = [len(review_tok(zero_shot.detokenize_lambada(t), add_special_tokens=False)["input_ids"]) + 1
               for t in zero_shot.benchmark_texts("lambada", data_files=benchmark_files["lambada"])]
    assert lengths[1] > 64  # the second passage spans two rows
    assert blocks.input_ids.shape == (3, 64) and blocks.real.sum(-1).tolist() == [lengths[0], 64, lengths[1] - 64]
    assert (blocks.input_ids[~blocks.real] == review_tok.eos_token_id).all() and blocks.num_tokens == sum(lengths)


def test_benchmark_errors_name_the_fix(tmp_path, review_tok, benchmark_files):
    with pytest.raises(ValueError, match="benchmark='owt' is not allowed"):
        zero_shot.benchmark_blocks("owt", review_tok, 8)
    with pytest.raises(FileNotFoundError, match="could not load ptb.*pass data_files="):
        zero_shot.benchmark_blocks("ptb", review_tok, 8)  # the hub is off in tests
    with pytest.raises(ValueError, match="fewer than one block of length=1024"):
        zero_shot.benchmark_blocks("ptb", review_tok, 1024, data_files=benchmark_files["ptb"])
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "the plot"}) + "\n")
    with pytest.raises(KeyError, match="need a 'text' field"):
        zero_shot.benchmark_texts("lambada", data_files=str(tmp_path / "x.jsonl"))
    with pytest.raises(ValueError, match="no known type"):
        corpus.file_builder(str(tmp_path / "x.docx"))
