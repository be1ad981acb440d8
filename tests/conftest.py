from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def need(module: str) -> ModuleType:
    """Import a package of the test extra; without it the tests fail, saying how to install it
    (never skip: a missing extra must not turn parity tests into silent skips)."""
    try:
        return importlib.import_module(module)
    except ImportError as missing:
        raise ImportError(f"the tests need {module!r}, which is part of archdsl's test extra: "
                          "pip install -e '.[test]'") from missing


@pytest.fixture
def root() -> Path:
    return ROOT
