"""Fuzzed chat requests against ``agentplex serve`` in its own process: whatever the body,
the answer is a success or an OpenAI-shaped 4xx JSON error, never a 5xx or a crash."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "x"])
tool_calls = st.lists(st.fixed_dictionaries({
    "id": st.text(max_size=5), "type": st.sampled_from(["function", "other"]),
    "function": st.fixed_dictionaries({
        "name": st.text(max_size=8),
        "arguments": st.one_of(st.text(max_size=30), values.map(json.dumps),
                               st.integers(1, 3000).map(lambda n: "[" * n + "]" * n))})}),
    max_size=2)
content = st.one_of(st.none(), st.text(max_size=30), st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {"url": st.sampled_from(["file:///etc/passwd", "data:x", "http://h/i.png", ""])})}),
    values), max_size=3))
messages = st.lists(st.fixed_dictionaries(
    {"role": roles, "content": content},
    optional={"tool_calls": tool_calls, "tool_call_id": st.text(max_size=5),
              "name": st.text(max_size=5)}), max_size=5)
requests = st.fixed_dictionaries(
    {"messages": st.one_of(messages, values)},
    optional={"model": st.sampled_from(["scripted:hello", "nope", ""]),
              "stream": st.booleans(), "temperature": st.one_of(st.floats(-5, 5), values),
              "max_tokens": st.one_of(st.integers(-5, 10), values), "tools": values,
              "tool_choice": values, "response_format": values, "n": st.integers(-1, 3),
              "stop": values, "logprobs": st.booleans(), "top_logprobs": values})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[httpx.Client, subprocess.Popen[str]]]:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(src), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplex", "serve", "scripted:hello", "--port", "0",
         "--log-level", "warning"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        found = re.search(r"at (http://\S+)", proc.stdout.readline())
        assert found
        with httpx.Client(base_url=found.group(1), timeout=30) as client:
            yield client, proc
    finally:
        proc.terminate()
        proc.wait(10)


def _check(got: httpx.Response) -> None:
    assert got.status_code < 500, got.text[:300]
    if got.status_code != 200:
        error = got.json()["error"]
        assert {"message", "type"} <= set(error)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=requests)
def test_fuzzed_requests_get_json_answers_never_5xx(
        served: tuple[httpx.Client, subprocess.Popen[str]], body: dict[str, Any]) -> None:
    client, proc = served
    _check(client.post("/chat/completions", json=body))
    assert proc.poll() is None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200), st.integers(1, 100_000).map(
    lambda n: b'{"model": "scripted:hello", "messages": ' + b"[" * n + b"]" * n + b"}")))
def test_fuzzed_bytes_get_json_answers_never_5xx(
        served: tuple[httpx.Client, subprocess.Popen[str]], raw: bytes) -> None:
    client, proc = served
    _check(client.post("/chat/completions", content=raw,
                       headers={"content-type": "application/json"}))
    assert proc.poll() is None
