import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "implicit_cot"


@pytest.fixture
def shared_file():
    """Path of a published data file under ../shared, skipping the test when ../shared is absent."""

    def get(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.is_file():
            pytest.skip(f"{path} not present (../shared is optional)")
        return path

    return get


@pytest.fixture(scope="session")
def digit_tokenizer():
    from reasoning_lib.tokenization import build_digit_tokenizer

    return build_digit_tokenizer()
