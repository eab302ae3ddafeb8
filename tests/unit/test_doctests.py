"""The docstring examples of the modules whose examples run on their own.

These examples are pure and synchronous: no model, database, network or event loop.
Docstrings elsewhere state their contracts in prose instead, and the tree is not
collected with ``--doctest-modules``, since importing some modules needs the model or
services. A listed module without examples fails, so the list stays true.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "kathan.api.body",
    "kathan.api.explain",
    "kathan.backends.anthropic",
    "kathan.backends.embeddings",
    "kathan.backends.fetch",
    "kathan.backends.gemini",
    "kathan.backends.gemini_schema",
    "kathan.backends.sse_client",
    "kathan.backends.toolcalls",
    "kathan.engine.detokenize",
    "kathan.engine.embed",
    "kathan.engine.runner",
    "kathan.engine.scheduler",
    "kathan.engine.stops",
    "kathan.engine.template",
    "kathan.engine.types",
    "kathan.errors",
    "kathan.limits",
    "kathan.protocol.chat",
    "kathan.routing.registry",
    "kathan.service.accumulate",
    "kathan.service.voice",
    "kathan.store.db",
    "kathan.store.passwords",
    "kathan.voice.chunker",
    "kathan.voice.markup",
    "kathan.voice.persona",
    "kathan.voice.profile",
    "kathan.voice.shaper",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(verbose=False)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.append)
    assert runner.tries > 0, f"{name} has no docstring examples; take it off the list"
    assert runner.failures == 0, "".join(report)
