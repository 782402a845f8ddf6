"""Malformed, truncated, oversized, wrongly typed frames; unknown actors; large payloads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentplex import Runtime
from agentplex.bus import FrameError, ZmqTransport
from agentplex.bus.lowlevel import (
    KNOWN_OPS,
    PROTO,
    Header,
    Op,
    pack_header,
    split_frames,
    to_frames,
)
from agentplex.message import encode
from agentplex.runtime import ActorNotFound, HandlerError
from tests.support.actors import Echo
from tests.support.bus_node import Node, start_node

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
headers = st.builds(
    lambda op, src, corr, target, rest: msgpack.packb([PROTO, op, src, corr, target, *rest]),
    st.sampled_from(sorted(KNOWN_OPS)),
    st.sampled_from(["head", "node-x", ""]) | values,
    st.none() | st.integers(min_value=-2, max_value=2**64 - 1) | values,
    st.sampled_from(["sink", "nobody", None]) | values,
    st.lists(values, min_size=0, max_size=6),
)
valid_headers = st.builds(
    lambda op, src, corr, target, sender, topic: pack_header(
        Header(op, src, corr, target, sender, topic)),
    st.sampled_from(sorted(KNOWN_OPS)), st.sampled_from(["head", "node-x"]),
    st.none() | st.integers(0, 5), st.sampled_from(["sink", "nobody"]),
    st.none() | st.text(max_size=5), st.none() | st.text(max_size=5),
)
payloads = st.binary(max_size=200) | values.map(encode) | \
    values.map(lambda v: msgpack.packb(v))
frame_lists = st.one_of(
    st.lists(st.binary(max_size=100), min_size=1, max_size=5),
    st.tuples(headers, payloads).map(list),
    st.tuples(headers, payloads).map(lambda t: [t[0] + t[1]]),
    st.tuples(valid_headers, payloads).map(lambda t: [t[0] + t[1]]),
    st.tuples(valid_headers, payloads).map(lambda t: [t[0] + t[1]]),
    st.tuples(headers, payloads, st.binary(max_size=10)).map(list),
    st.tuples(headers.map(lambda h: h[: len(h) // 2]), payloads).map(list),
)


@pytest.fixture(scope="module")
def fuzz_head() -> Any:
    node = start_node("-", "Echo:sink")
    peer = start_node(node.endpoint, node_id="node-x")  # so forged frames from it get far
    yield node
    peer.stop()
    node.stop()


@pytest.fixture(scope="module")
def raw(fuzz_head: Node) -> Any:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 5000)
    sock.connect(fuzz_head.endpoint)
    yield sock
    ctx.destroy(linger=0)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=frame_lists)
def test_fuzzed_frames_never_crash_a_process(raw: Any, fuzz_head: Node, frames: list[bytes]
                                             ) -> None:
    raw.send_multipart(frames)
    assert fuzz_head.proc.poll() is None


def test_fuzzed_process_still_serves(fuzz_head: Node) -> None:
    async def check() -> Any:
        async with Runtime(ZmqTransport(head=fuzz_head.endpoint), default_timeout=20) as rt:
            return await rt.ref("sink").call("still serving")

    assert asyncio.run(check()) == "still serving"
    assert fuzz_head.proc.poll() is None


@pytest.mark.anyio
async def test_bad_frames_are_dropped_and_counted() -> None:
    t = ZmqTransport(max_message_size=1024)
    async with Runtime(t, default_timeout=10) as rt:
        echo = Echo()
        await rt.spawn(echo, "sink")
        peer = ZmqTransport(head=t.endpoint, node_id="node-x")
        await Runtime(peer).start()
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(t.endpoint)
        good = pack_header(Header(Op.TELL, "node-x", None, "sink"))
        bad = [
            [b"x"],                                           # not msgpack
            [b"\x93\x01"],                                    # truncated header
            [good, encode("small"), b""],                     # too many frames
            [good, encode("small")],                          # small payload in its own frame
            [msgpack.packb([PROTO, "tell", 7, None, "sink", None, None, [], None])],
            [msgpack.packb([PROTO, "launch", "head", None, "sink", None, None, [], None])],
            [msgpack.packb([2, "tell", "node-x", None, "sink", None, None, [], None])],
            [pack_header(Header(Op.TELL, "head", None, "sink")) + encode("forged")],
            [good + b"\xc1not msgpack"],                      # undecodable payload
            [good + encode("x" * 4000)],                      # over max_message_size
            [pack_header(Header(Op.TELL, "stranger", None, "sink")) + encode("x")],
        ]
        try:
            for frames in bad:
                await sock.send_multipart(frames)
            await sock.send_multipart([good + encode("fine")])
            for _ in range(100):
                if echo.told:
                    break
                await asyncio.sleep(0.05)
        finally:
            ctx.destroy(linger=0)
            await peer.close()
        assert echo.told == ["fine"]
        assert t.stats["dropped"] + t.stats["bad_payload"] == len(bad)


@pytest.mark.anyio
async def test_unknown_actor_and_50mb_payloads(nodes: Any) -> None:
    async with Runtime(ZmqTransport(), default_timeout=60) as rt:
        t: ZmqTransport = rt.transport  # type: ignore[assignment]
        await nodes(t.endpoint, "Echo:big", node_id="bignode")
        # a message for an actor the node does not host comes back as an error
        t._calls.names["ghost"] = "bignode"
        with pytest.raises(ActorNotFound):
            await rt.ref("ghost").call("anyone?")
        t._calls.names["ghost"] = "bignode"
        await rt.ref("ghost").tell("anyone?")
        for _ in range(100):
            if t.stats["tell_failed"]:
                break
            await asyncio.sleep(0.05)
        assert t.stats["tell_failed"] == 1
        size = 50 * 1024 * 1024
        assert await rt.ref("big").call(bytes(size)) == size
        blob = await rt.ref("big").call(f"blob:{size}")
        assert isinstance(blob, bytes) and len(blob) == size
        with pytest.raises(HandlerError):  # a reply over the limit is refused by its encoder
            await rt.ref("big").call("blob:x")


def test_frame_functions_parse_after_a_malformed_frame_in_every_thread() -> None:
    """The module-level frame functions reuse one packer and unpacker per thread: a
    malformed frame leaves them able to parse the next, and threads never mix their bytes."""

    def round_trips(tag: str) -> list[tuple[Header, bytes]]:
        out = []
        for i in range(2000):
            header = Header(Op.CALL, tag, i, f"{tag}-{i}")
            if i % 100 == 0:
                with pytest.raises(FrameError):
                    split_frames([pack_header(header)[:-3] + b"\xc1"])
            out.append(split_frames(to_frames(header, encode([tag, i]))))
        return out

    tags = [f"t{n}" for n in range(4)]
    with ThreadPoolExecutor(len(tags)) as pool:
        results = list(pool.map(round_trips, tags))
    for tag, got in zip(tags, results, strict=True):
        assert got == [(Header(Op.CALL, tag, i, f"{tag}-{i}"), encode([tag, i]))
                       for i in range(2000)]
