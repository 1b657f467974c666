"""Shared paths of the tessera Python tests."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"


@pytest.fixture
def root():
    return ROOT
