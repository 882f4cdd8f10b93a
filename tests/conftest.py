"""Shared test fixtures: a fresh node store in a temporary directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="also run long soak tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long soak: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
