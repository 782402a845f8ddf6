"""Static-shape decode steps: the buffers give the tokens of the paged steps (rows joining,
finishing, padded to buckets or not), a sampled row's tokens do not depend on its batch,
and rows end on the device at their end-of-sequence token or their limit."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentplex.engine import BatchEngine, Sampling  # noqa: E402
from agentplex.engine._static import bucket  # noqa: E402
from agentplex.engine._stopping import ends  # noqa: E402
from tests.support.engine_runs import make_engine, prompts, run  # noqa: E402


def _padded(eng: BatchEngine) -> None:
    """Pad the engine's static steps to their buckets, as on CUDA (eagerly: no graphs)."""
    eng.runner.use_static(True, eos=eng.stops.eos_tensor(None), max_rows=eng.max_batch_size,
                          graphs=False, padded=True)


@pytest.mark.parametrize("padded", [False, True])
def test_static_steps_give_the_tokens_of_paged_steps(pair: tuple[Any, Any],
                                                     padded: bool) -> None:
    """Rows of different lengths, a shared head, limits that end rows at different steps
    and prompts joining while the others decode: the same tokens, and the buffers are
    loaded only when the batch changed."""
    batch = [p[:n] for p, n in zip(prompts(5, shared=70, own=30, seed=3),
                                   (100, 95, 80, 77, 71), strict=True)]
    late = prompts(3, shared=0, own=40, seed=4)
    limits = [{"max_new_tokens": n} for n in (30, 5, 17, 40, 1)]
    plain = make_engine(pair, static_decode=False, prefill_chunk=64)
    static = make_engine(pair, static_decode=True, prefill_chunk=64)
    if padded:
        _padded(static)
    try:
        expected = run(plain, batch, 20, late=late, each=limits)
        got = run(static, batch, 20, late=late, each=limits)
        assert [r.generated for r in got] == [r.generated for r in expected]
        assert [len(r.generated) for r in got[:5]] == [30, 5, 17, 40, 1]
        steps = static.runner.static
        assert steps is not None and steps.steps > 20
        assert steps.loads < steps.steps // 2  # most steps reuse what the buffers hold
        assert static.runner.pool.used == plain.runner.pool.used  # every row's blocks back
    finally:
        plain.close()
        static.close()


def test_a_sampled_row_draws_the_same_tokens_whatever_its_batch(pair: tuple[Any, Any]) -> None:
    """A seeded row with a temperature and top-p: alone, among rows sampling otherwise
    (padded to a bucket), and through the host's sampling: the same tokens."""
    mine = Sampling(temperature=0.9, top_p=0.8, seed=11)
    others = [Sampling(temperature=1.3, seed=2), Sampling(), Sampling(temperature=0.7,
              top_k=5, seed=3), Sampling(temperature=1.0)]
    head = prompts(1, shared=0, own=50, seed=5)
    crowd = prompts(4, shared=0, own=60, seed=6)
    alone = make_engine(pair, static_decode=True)
    together = make_engine(pair, static_decode=True)
    _padded(together)
    host = make_engine(pair, static_decode=False)
    try:
        a = run(alone, head, 24, each=[{"sampling": mine}])[0]
        t = run(together, crowd[:2] + head + crowd[2:], 24,
                each=[{"sampling": s} for s in [*others[:2], mine, *others[2:]]])[2]
        h = run(host, head, 24, each=[{"sampling": mine}])[0]
        assert a.generated == t.generated == h.generated
        greedy = run(host, head, 24)[0]
        assert a.generated != greedy.generated  # it did sample
    finally:
        alone.close()
        together.close()
        host.close()


def test_rows_end_on_the_device_at_their_end_token_or_limit(pair: tuple[Any, Any]) -> None:
    model, tok = pair
    batch = prompts(4, shared=0, own=30, seed=9)
    probe = make_engine(pair, static_decode=False)
    try:
        first = run(probe, batch, 12)
    finally:
        probe.close()
    eos = first[0].generated[4]  # a token the first row meets at its fifth step
    results = []
    for static in (False, True):
        eng = BatchEngine(model, tok, eos_ids={eos}, batch_wait=0.05, static_decode=static)
        try:
            results.append(run(eng, batch, 12))
        finally:
            eng.close()
    plain, static_rows = results
    assert [r.generated for r in static_rows] == [r.generated for r in plain]
    assert [r.finish_reason for r in static_rows] == [r.finish_reason for r in plain]
    assert static_rows[0].finish_reason == "stop" and static_rows[0].generated[-1] == eos
    assert any(r.finish_reason == "length" for r in static_rows)
    tokens = torch.tensor([5, 7, 9, 7])
    assert ends(tokens, torch.tensor([7]), torch.tensor([0, 0, 3, 9]),
                torch.tensor([8, 8, 4, 20])).tolist() == [False, True, True, True]


def test_rows_needing_the_host_take_the_paged_step(pair: tuple[Any, Any]) -> None:
    """Log-probabilities are chosen on the host: such a batch decodes as before."""
    batch = prompts(3, shared=0, own=20, seed=2)
    plain = make_engine(pair, static_decode=False)
    static = make_engine(pair, static_decode=True)
    try:
        expected = run(plain, batch, 8, logprobs=2)
        got = run(static, batch, 8, logprobs=2)
        assert [r.generated for r in got] == [r.generated for r in expected]
        assert static.runner.static is not None and static.runner.static.steps == 0
    finally:
        plain.close()
        static.close()


@pytest.mark.parametrize("mode", [(False, True, False), (True, True, True),
                                  (True, False, False)])
def test_a_static_step_reads_nothing_back_to_the_host(pair: tuple[Any, Any],
                                                      mode: tuple[bool, bool, bool]) -> None:
    """What a CUDA graph needs, checked on the CPU: the step (forward pass, sampling, end
    checks) runs on fake tensors, where any read of a value (``.item()``, ``.tolist()``, a
    branch on a tensor) or a shape that depends on values (``nonzero``) raises. The host's
    paged step does raise there: the check bites."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
    )

    eng = make_engine(pair, static_decode=True)
    _padded(eng)
    try:
        sampling = Sampling(temperature=0.8, top_p=0.9, top_k=4, seed=1)
        run(eng, prompts(3, shared=0, own=20), 6,
            each=[{"sampling": sampling}, {}, {"sampling": Sampling(temperature=1.2)}])
        steps, pool = eng.runner.static, eng.runner.pool
        assert steps is not None and steps.steps > 0
        with torch.inference_mode(), FakeTensorMode(allow_non_fake_inputs=True):
            steps._forward(pool, 4, 128, mode)  # padded: 4 rows, 4 blocks of 32
        from agentplex.engine._kvcache import Seq
        from agentplex.engine._paged import PagedStep

        fake = FakeTensorMode(allow_non_fake_inputs=True)
        with (pytest.raises((DataDependentOutputException, DynamicOutputShapeException)),
              torch.inference_mode(), fake):
            PagedStep(pool, [Seq(), Seq()], [1, 1])
    finally:
        eng.close()


def test_buckets() -> None:
    assert [bucket(n, rows=True) for n in (1, 3, 5, 9, 17, 25, 33, 49, 65, 200)] == [
        1, 4, 8, 16, 24, 32, 48, 64, 96, 224]
    assert [bucket(n, rows=False) for n in (1, 4, 5, 9, 33)] == [4, 4, 8, 16, 64]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_replay_the_eager_steps(pair: tuple[Any, Any]) -> None:
    """On a GPU: steps replayed from CUDA graphs give the tokens of the same padded steps
    run eagerly, greedy and sampled, rows leaving at their limits (the same batches in both
    runs: the same kernels; not run without a GPU)."""
    model, tok = pair
    cuda = type(model)(model.config).to("cuda").eval()
    cuda.load_state_dict(model.state_dict())
    batch = prompts(6, shared=40, own=30, seed=12)
    each = [{"max_new_tokens": n, "sampling": Sampling(temperature=t, top_p=p, seed=i)}
            for i, (n, t, p) in enumerate([(20, 0.0, 1.0), (7, 0.8, 1.0), (20, 1.1, 0.9),
                                           (13, 0.0, 1.0), (20, 0.7, 1.0), (3, 0.0, 1.0)])]
    results = []
    for graphs in (False, True):
        eng = make_engine((cuda, tok), static_decode=True)
        eng.runner.use_static(True, eos=eng.stops.eos_tensor(cuda.device),
                              max_rows=eng.max_batch_size, graphs=graphs, padded=True)
        try:
            results.append(run(eng, batch, 16, each=each))
            steps = eng.runner.static
            assert steps is not None and steps.steps > 10
            assert (steps.captures > 0) == graphs
        finally:
            eng.close()
    eager, replayed = results
    assert [r.generated for r in replayed] == [r.generated for r in eager]
