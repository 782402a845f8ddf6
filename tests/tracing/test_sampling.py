"""The sampler named by OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, and its decisions."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanContext, TraceFlags

from agentplex.tracing import TraceSampler


@pytest.mark.parametrize(("name", "arg", "ratio", "parent_based"), [
    (None, None, 1.0, True),
    ("always_on", None, 1.0, False),
    ("always_off", None, 0.0, False),
    ("traceidratio", "0.25", 0.25, False),
    ("parentbased_always_on", None, 1.0, True),
    ("parentbased_always_off", None, 0.0, True),
    ("parentbased_traceidratio", "0.01", 0.01, True),
    ("ParentBased_TraceIdRatio", None, 1.0, True),
])
def test_sampler_from_environment(monkeypatch: pytest.MonkeyPatch, name: str | None,
                                  arg: str | None, ratio: float, parent_based: bool) -> None:
    for var, value in (("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", arg)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    sampler = TraceSampler.from_env()
    assert (sampler.ratio, sampler.parent_based) == (ratio, parent_based)


@pytest.mark.parametrize(("name", "arg", "message"), [
    ("jaeger_remote", None, "unsupported OTEL_TRACES_SAMPLER 'jaeger_remote'"),
    ("traceidratio", "half", "must be a number"),
    ("traceidratio", "2", "between 0 and 1"),
])
def test_bad_sampler_settings_are_clear_errors(monkeypatch: pytest.MonkeyPatch, name: str,
                                               arg: str | None, message: str) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(ValueError, match=message):
        TraceSampler.from_env()


def test_roots_follow_the_trace_id_and_children_follow_their_parent() -> None:
    sampler = TraceSampler(0.5)
    low, high = 1, (1 << 64) - 1  # lower 64 bits of the trace id against the bound
    assert sampler.sampled(None, low) and not sampler.sampled(None, high)
    kept = SpanContext(high, 7, True, TraceFlags(TraceFlags.SAMPLED))
    dropped = SpanContext(low, 7, True, TraceFlags(TraceFlags.DEFAULT))
    assert sampler.sampled(kept, high)  # the parent decided: the id no longer matters
    assert not sampler.sampled(dropped, low)
    free = TraceSampler(0.5, parent_based=False)
    assert not free.sampled(kept, high) and free.sampled(dropped, low)
    assert sampler.should_sample(None, high, "root").decision is Decision.DROP
    assert TraceSampler(1.0).should_sample(None, high, "x").decision is Decision.RECORD_AND_SAMPLE
