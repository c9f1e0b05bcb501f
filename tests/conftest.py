"""Fixtures shared by several test modules."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture()
def keep_logging():
    """The CLIs configure root logging; put the test process's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
