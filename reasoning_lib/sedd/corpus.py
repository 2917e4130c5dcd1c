"""A text corpus tokenised once into a memory-mapped token file, and the fixed-length blocks SEDD trains on.

SEDD (Lou, Meng & Ermon 2024, §5.1) trains on OpenWebText packed as the reference's ``data.py`` packs it: every
document is tokenised, end-of-text is appended, everything is concatenated and cut into blocks of ``length``
tokens (1024), the remainder dropped; no padding, no attention mask. The reference does this with
``datasets.map`` into Arrow tables of int64 ids. Here, as in nanoGPT's ``prepare.py``, the ids go into one flat
file of ``uint16`` (GPT-2's 50,257 ids fit; a vocabulary over 65,536 ids takes ``uint32``), ~18 GB for
OpenWebText, which every process of a run memory-maps: the pages are shared through the page cache and a
block is read only when a batch needs it. Two deliberate differences from the reference: the remainder is
dropped once at the end of the stream (the reference drops one per batch of 1,000 documents), and documents
are tokenised without the tokenizer's special tokens (GPT-2 adds none, so its ids are the reference's).

The file is written by rank 0 alone (the others wait for its ``finished`` flag), in batches of documents, and
is resumable: every ``record_every`` documents the tokens are flushed to disk and then a small JSON record
(``<name>.json``: source, tokenizer, dtype, tokens and documents done, max id, finished) is replaced
atomically. An interrupted run truncates the ``.bin`` to the last record and continues from its documents,
so the file never holds a partial document and a resumed file equals an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import check_choice, check_positive
from ..runtime import launch_info

FORMAT_VERSION = 1
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
# Tokenised together: ~64 OpenWebText documents are ~70k ids, ~2.5 MB as the tokenizer's Python lists.
BATCH_DOCUMENTS = 64
RECORD_EVERY = 20_000  # documents between durable records: the most an interruption loses
PROBE_TEXT = "Score entropy 1024 blocks, naïve café — “quotes” & <tags>\n\tend."


def token_dtype(vocab_size: int, dtype: str = "auto") -> str:
    """``'uint16'`` when every id of a ``vocab_size`` vocabulary fits in 16 bits, else ``'uint32'``; an explicit
    ``dtype`` too small for the vocabulary is refused."""
    check_choice("dtype", dtype, ("auto", *DTYPES))
    needed = "uint16" if vocab_size <= 2**16 else "uint32"
    if dtype == "uint16" and needed != "uint16":
        raise ValueError(f"dtype='uint16' holds ids up to 65535 but the tokenizer has {vocab_size:,} ids; "
                         f"use dtype='uint32' (or 'auto')")
    return needed if dtype == "auto" else dtype


def tokenizer_identity(tokenizer, name: str | None = None) -> dict:
    """What the token file's ids depend on: the vocabulary size, end-of-text id and the ids of a probe text."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token: set one (every document ends in end-of-text)")
    probe = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    digest = hashlib.sha1(json.dumps([len(tokenizer), tokenizer.eos_token_id, probe]).encode()).hexdigest()[:12]
    return {"name": name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
            "vocab_size": len(tokenizer), "eos_id": tokenizer.eos_token_id, "fingerprint": digest}


def metadata_path(bin_path: str | os.PathLike) -> Path:
    """The JSON record next to a token file: ``train.bin`` → ``train.json``."""
    return Path(bin_path).with_suffix(".json")


def read_metadata(bin_path: str | os.PathLike) -> dict | None:
    """The token file's record, or None when there is none yet."""
    path = metadata_path(bin_path)
    return json.loads(path.read_text()) if path.is_file() else None


def _write_metadata(bin_path: Path, meta: dict) -> None:
    """Replace the record atomically: a reader sees the old record or the new one, never half of one."""
    path = metadata_path(bin_path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------- writing
def _texts(documents, text_field: str, start: int, stop: int) -> list[str]:
    """Documents [start, stop) as strings, from a ``datasets.Dataset`` column or a sequence of strings."""
    if hasattr(documents, "column_names"):  # an Arrow-backed dataset: only this slice is read into memory
        if text_field not in documents.column_names:
            raise KeyError(f"the dataset has no text field {text_field!r}; its columns are {documents.column_names} "
                           f"(pass text_field=)")
        return documents[start:stop][text_field]
    return list(documents[start:stop])


def _encode(tokenizer, texts: list[str], dtype: str) -> np.ndarray:
    """[tokens] every text's ids followed by end-of-text, concatenated."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    pieces = [np.asarray(row + [eos], dtype=np.int64) for row in ids]
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(DTYPES[dtype]).max):
        raise ValueError(f"token ids reach {int(flat.max())}, beyond {dtype}: use dtype='uint32'")
    return flat.astype(DTYPES[dtype])


def _start_record(bin_path: Path, source: dict, tok: dict, dtype: str, total: int) -> dict:
    """The record to continue from: the existing one (checked to describe the same file) or a fresh one."""
    fresh = {"format": FORMAT_VERSION, "source": source, "tokenizer": tok, "dtype": dtype, "num_documents": total,
             "documents_done": 0, "num_tokens": 0, "max_id": -1, "finished": False}
    meta = read_metadata(bin_path)
    if meta is None:
        return fresh
    identity = ("format", "source", "tokenizer", "dtype", "num_documents")
    differ = [k for k in identity if json.loads(json.dumps(meta.get(k))) != json.loads(json.dumps(fresh[k]))]
    if differ:
        raise ValueError(f"{bin_path} was made from other data or another tokenizer ({', '.join(differ)} differ: "
                         f"{ {k: meta.get(k) for k in differ} } vs { {k: fresh[k] for k in differ} }); delete "
                         f"{bin_path} and {metadata_path(bin_path)} or use another cache folder")
    return meta


def _truncate_to_record(bin_path: Path, meta: dict) -> None:
    """Drop tokens written after the last record (an interrupted batch), so the file ends on a document."""
    itemsize = np.dtype(DTYPES[meta["dtype"]]).itemsize
    want = meta["num_tokens"] * itemsize
    have = bin_path.stat().st_size if bin_path.exists() else 0
    if have < want:
        raise ValueError(f"{bin_path} holds {have:,} bytes but its record says {want:,}: the file was damaged; "
                         f"delete it and {metadata_path(bin_path)} to tokenise again")
    with open(bin_path, "ab") as handle:
        handle.truncate(want)


@contextmanager
def _writer_lock(bin_path: Path):
    """One writer per file on this machine (two notebooks preparing the same corpus take turns)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): a single writer is assumed
        yield
        return
    with open(bin_path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_token_file(bin_path: str | os.PathLike, documents, tokenizer, source: dict, text_field: str = "text",
                     tokenizer_name: str | None = None, dtype: str = "auto", batch_documents: int = BATCH_DOCUMENTS,
                     record_every: int = RECORD_EVERY, progress: bool = True,
                     on_record: Callable[[dict], None] | None = None) -> dict:
    """Tokenise ``documents`` (a ``datasets.Dataset`` with ``text_field``, or a sequence of strings) into
    ``bin_path``, continuing an interrupted run; returns the finished record.

    ``source`` describes the documents (dataset id, split, document range) and is checked against an existing
    record, as is the tokenizer. ``on_record(record)`` runs after each durable record (tests interrupt there)."""
    check_positive("batch_documents", batch_documents)
    check_positive("record_every", record_every)
    bin_path = Path(bin_path)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_identity(tokenizer, tokenizer_name)
    dtype = token_dtype(tok["vocab_size"], dtype)
    total = len(documents)
    if hasattr(documents, "select_columns") and text_field in documents.column_names:
        documents = documents.select_columns([text_field])  # slices then read this column alone
    with _writer_lock(bin_path):
        meta = _start_record(bin_path, source, tok, dtype, total)
        if meta["finished"]:
            return meta
        _truncate_to_record(bin_path, meta)
        _append_documents(bin_path, documents, tokenizer, text_field, meta, batch_documents, record_every,
                          progress, on_record)
        meta["finished"] = True
        _write_metadata(bin_path, meta)
    if progress:
        print(f"tokenised {total:,} documents into {meta['num_tokens']:,} {dtype} tokens: {bin_path}")
    return meta


def _append_documents(bin_path: Path, documents, tokenizer, text_field: str, meta: dict, batch_documents: int,
                      record_every: int, progress: bool, on_record) -> None:
    """Tokenise from ``meta['documents_done']`` to the end, recording progress every ``record_every`` documents."""
    from tqdm import tqdm

    total, done = meta["num_documents"], meta["documents_done"]
    bar = tqdm(total=total, initial=done, unit="doc", desc=f"tokenising {bin_path.name}", disable=not progress,
               mininterval=2.0)
    pending = 0  # documents written to the file since the last record
    with open(bin_path, "ab") as handle:
        for start in range(done, total, batch_documents):
            stop = min(start + batch_documents, total)
            tokens = _encode(tokenizer, _texts(documents, text_field, start, stop), meta["dtype"])
            handle.write(tokens.tobytes())
            meta["num_tokens"] += int(tokens.size)
            meta["max_id"] = max(meta["max_id"], int(tokens.max()) if tokens.size else -1)
            pending += stop - start
            bar.update(stop - start)
            if pending >= record_every or stop == total:
                _record(handle, bin_path, meta, stop)
                pending = 0
                if on_record is not None:
                    on_record(dict(meta))
    bar.close()


def _record(handle, bin_path: Path, meta: dict, documents_done: int) -> None:
    """Make the tokens durable, then say so: the record never claims tokens that are not on disk."""
    handle.flush()
    os.fsync(handle.fileno())
    meta["documents_done"] = documents_done
    _write_metadata(bin_path, meta)


# ---------------------------------------------------------------------------------------------------- ranks
def wait_for_token_file(bin_path: str | os.PathLike, poll_s: float = 5.0, timeout_s: float | None = None) -> dict:
    """Block until rank 0 has finished ``bin_path``; returns its record. The folder must be one every process
    sees (on several nodes: a shared file system)."""
    bin_path, started, told = Path(bin_path), time.monotonic(), False
    while True:
        meta = read_metadata(bin_path)
        if meta is not None and meta.get("finished"):
            return meta
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            raise TimeoutError(f"rank {launch_info().rank} waited {timeout_s:g}s for rank 0 to finish {bin_path}; "
                               f"is rank 0 running, and is the cache folder shared by every process?")
        if not told:
            print(f"rank {launch_info().rank}: waiting for rank 0 to tokenise {bin_path}")
            told = True
        time.sleep(poll_s)


def _check_reusable(bin_path: Path, meta: dict, source: dict, tok: dict) -> None:
    """A finished file is reused when its tokenizer and the settings known before loading the data match."""
    recorded = {k: meta["source"].get(k) for k in source}
    if json.loads(json.dumps(recorded)) != json.loads(json.dumps(source)) or meta["tokenizer"] != tok:
        raise ValueError(f"{bin_path} was made with {recorded} and tokenizer {meta['tokenizer']}, not {source} and "
                         f"{tok}; delete {bin_path.parent} or use another cache folder")


def build_token_file(bin_path: str | os.PathLike, load: Callable[[], tuple[Any, dict]], tokenizer, source: dict,
                     tokenizer_name: str | None = None, wait_timeout_s: float | None = None, **options) -> dict:
    """Rank 0 writes (or resumes) ``bin_path``; every other rank waits for its finished flag. Returns the record.

    ``load()`` → ``(documents, details)`` runs on rank 0 only, and only when the file is not finished yet (a
    finished file is reused without loading the dataset): ``source`` holds what is known beforehand (dataset id,
    settings), ``details`` what loading decides (split, document range). ``options`` go to
    :func:`write_token_file`."""
    bin_path = Path(bin_path)
    tok = tokenizer_identity(tokenizer, tokenizer_name)
    meta = read_metadata(bin_path)
    if launch_info().is_main and not (meta and meta.get("finished")):
        documents, details = load()
        meta = write_token_file(bin_path, documents, tokenizer, {**source, **details}, tokenizer_name=tokenizer_name,
                                **options)
    elif not launch_info().is_main:
        meta = wait_for_token_file(bin_path, timeout_s=wait_timeout_s)
    _check_reusable(bin_path, meta, source, tok)
    _barrier()
    return meta


def _barrier() -> None:
    """Line the processes up when a process group exists (after the wait, so no collective waits for hours)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------------------------------------- reading
class TokenBlocks(torch.utils.data.Dataset):
    """Blocks of ``length`` consecutive tokens of a finished token file: block i is tokens [i·length,
    (i+1)·length), the remainder dropped. ``blocks[i]`` is ``{"input_ids": [length] int64}`` (the shared
    loop's rows), ``blocks[a:b]`` a [b-a, length] int64 tensor; ``take(n)`` the first n blocks, without copying."""

    def __init__(self, bin_path: str | os.PathLike, length: int, num_blocks: int | None = None):
        check_positive("length", length)
        self.path, self.length = Path(bin_path), length
        meta = read_metadata(self.path)
        if meta is None or not meta.get("finished"):
            state = "has no record" if meta is None else f"is unfinished ({meta['documents_done']:,} of " \
                                                          f"{meta['num_documents']:,} documents)"
            raise FileNotFoundError(f"{self.path} {state}: build it with write_token_file / prepare_corpus first")
        self.metadata = meta
        available = meta["num_tokens"] // length
        if num_blocks is not None and not 0 <= num_blocks <= available:
            raise ValueError(f"{self.path} holds {available:,} blocks of {length} tokens, not {num_blocks:,}: ask for "
                             f"fewer (num_sequences) or tokenise a larger corpus")
        self.num_blocks = available if num_blocks is None else num_blocks
        self._tokens = None  # opened lazily in each process (a memmap is not pickled into DataLoader workers)

    @property
    def max_id(self) -> int:
        """Largest id in the whole file (recorded while writing): an upper bound for every block."""
        return self.metadata["max_id"]

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.length

    @property
    def tokens(self) -> np.ndarray:
        """The file's ids, memory-mapped read-only."""
        if self._tokens is None:
            count = self.metadata["num_tokens"]
            dtype = DTYPES[self.metadata["dtype"]]
            self._tokens = np.memmap(self.path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)
        return self._tokens

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._rows(range(*index.indices(self.num_blocks)))
        index = int(index)
        if index < 0:
            index += self.num_blocks
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} out of range for {self.num_blocks:,} blocks")
        return {"input_ids": self._block(index)}

    def _block(self, index: int) -> torch.Tensor:
        start = index * self.length
        return torch.from_numpy(self.tokens[start:start + self.length].astype(np.int64))

    def _rows(self, indices: range) -> torch.Tensor:
        """[len(indices), length] int64; a contiguous range is one read."""
        if len(indices) == 0:
            return torch.zeros(0, self.length, dtype=torch.long)
        if indices.step == 1:
            flat = self.tokens[indices.start * self.length:indices.stop * self.length]
            return torch.from_numpy(flat.astype(np.int64).reshape(len(indices), self.length))
        return torch.stack([self._block(i) for i in indices])

    def take(self, num_blocks: int) -> "TokenBlocks":
        """The first ``num_blocks`` blocks (a preset's ``num_sequences``), a view of the same file."""
        return TokenBlocks(self.path, self.length, num_blocks)

    def tensor(self) -> torch.Tensor:
        """Every block as one [N, length] int64 tensor (materialised: for small held-out sets)."""
        return self[:]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}

    def __repr__(self) -> str:
        return f"TokenBlocks({str(self.path)!r}, length={self.length}, blocks={self.num_blocks:,})"


def slug(name: str) -> str:
    """A folder name for a dataset or tokenizer id (``Skylion007/openwebtext`` → ``Skylion007--openwebtext``)."""
    cleaned = str(name).strip().rstrip("/\\").replace("\\", "/")
    if os.path.isabs(cleaned) or cleaned.startswith("."):  # a local folder: its name plus a hash of its path
        return f"{Path(cleaned).name}-{hashlib.sha1(cleaned.encode()).hexdigest()[:8]}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in cleaned.replace("/", "--"))


def token_folder(cache_dir: str | os.PathLike, corpus: str, tokenizer, tokenizer_name: str | None = None) -> Path:
    """``<cache_dir>/<corpus>/<tokenizer>-<fingerprint>/``: where a corpus's token files go."""
    tok = tokenizer_identity(tokenizer, tokenizer_name)
    return Path(cache_dir) / slug(corpus) / f"{slug(tok['name'])}-{tok['fingerprint']}"


def concatenate_documents(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Every text's ids followed by end-of-text, concatenated (int64): what a token file holds."""
    return _encode(tokenizer, list(texts), "uint32").astype(np.int64)


# Local files: the ``datasets`` builder that reads each kind (compressed copies, e.g. ``.jsonl.gz``, too).
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text", ".raw": "text",
                 ".tokens": "text", ".csv": "csv", ".arrow": "arrow"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def file_builder(data_files) -> str:
    """The ``datasets`` builder for local ``data_files`` (a path, a list of paths, or split → path(s))."""
    groups = data_files.values() if isinstance(data_files, dict) else [data_files]
    paths = [str(p) for group in groups for p in ([group] if isinstance(group, (str, os.PathLike)) else group)]
    kinds = set()
    for path in paths:
        suffixes = [s for s in Path(path).suffixes if s.lower() not in COMPRESSIONS]
        kind = FILE_BUILDERS.get(suffixes[-1].lower() if suffixes else "")
        if kind is None:
            raise ValueError(f"data file {path} has no known type; name it with one of {sorted(FILE_BUILDERS)}")
        kinds.add(kind)
    if len(kinds) != 1:
        raise ValueError(f"data_files mix file types ({sorted(kinds)}); give files of one type")
    return kinds.pop()
