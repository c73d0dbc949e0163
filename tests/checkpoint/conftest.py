"""What the checkpoint tests share: the tiktoken test encoding's plugin importable in this process."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import TK_NAME


@pytest.fixture
def tiktoken_plugin(plugin, monkeypatch):
    """The session's tiktoken plugin (TK_NAME) found by tiktoken in this process, for in-process runs that name it
    (a subprocess finds it through PYTHONPATH). tiktoken looks for plugins once per process, so its registry is
    made to look again here, and is left afterwards as it was."""
    registry = pytest.importorskip("tiktoken.registry")
    monkeypatch.syspath_prepend(str(plugin))
    registry._available_plugin_modules.cache_clear()
    monkeypatch.setattr(registry, "ENCODING_CONSTRUCTORS", None)
    monkeypatch.setattr(registry, "ENCODINGS", {})
    yield plugin
    registry._available_plugin_modules.cache_clear()  # monkeypatch then takes the plugin off sys.path
    sys.modules.pop(f"tiktoken_ext.{TK_NAME}", None)
