"""Node-local fan-out across node processes: one frame per node for a broadcast and for a
fan-out call, each delivered to the node's local actors, in order."""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import pytest

from agentplex import ActorError, ActorNotFound, HandlerError, Msg, MsgHub, Runtime, TextBlock
from agentplex.bus import ZmqTransport
from agentplex.bus.lowlevel import Op
from agentplex.message import encode
from agentplex.message.lowlevel import encode_each
from agentplex.orchestration import fanout_pipeline
from agentplex.runtime import CallTimeout, PeerLost, PerActor

pytestmark = pytest.mark.anyio


def head() -> Runtime:
    return Runtime(ZmqTransport(heartbeat_interval=0.2, heartbeat_timeout=1.5),
                   default_timeout=20)


async def test_a_broadcast_sends_one_frame_per_node(nodes: Any) -> None:
    names = {n: [f"t{n}{i}" for i in range(4)] for n in range(3)}
    async with head() as rt:
        stats = rt.transport.stats  # type: ignore[attr-defined]
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        for members in names.values():
            await nodes(ep, *(f"Talker:{m}" for m in members))
        everyone = [m for members in names.values() for m in members]
        refs = [rt.ref(m) for m in everyone]
        with anyio.fail_after(30):
            async with MsgHub(refs, enable_auto_broadcast=False) as hub:
                before = stats["publish_frames"]
                for i in range(5):
                    await hub.broadcast(Msg("host", f"news {i}", "user"))
                assert stats["publish_frames"] - before == 5 * 3  # one per node, not per agent
            memories = await rt.call_many(refs, Msg("host", "memory", "user"))
    expected = "|".join(f"host:news {i}" for i in range(5))
    assert [m.content for m in memories] == [expected] * len(everyone)


async def test_call_many_across_three_nodes(nodes: Any) -> None:
    async with head() as rt:
        stats = rt.transport.stats  # type: ignore[attr-defined]
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        for n in range(3):
            await nodes(ep, *(f"Echo:e{n}{i}:tag{n}{i}" for i in range(5)),
                        *(["Failing:bad"] if n == 1 else []))
        targets = [f"e{n}{i}" for i in range(5) for n in range(3)]  # nodes interleaved
        targets.insert(4, "bad")
        targets.insert(9, "ghost")
        with anyio.fail_after(30):
            before = stats["call_many_frames"]
            got = await rt.call_many(targets, "where", return_exceptions=True)
            assert stats["call_many_frames"] - before == 3
            again = await rt.call_many(targets[:3], "where")  # names cached: same path
    for target, reply in zip(targets, got, strict=True):
        if target == "bad":
            assert isinstance(reply, HandlerError) and "cannot handle" in str(reply)
            assert reply.actor == "bad"
        elif target == "ghost":
            assert isinstance(reply, ActorNotFound)
        else:
            assert reply == "tag" + target[1:]
    assert again == ["tag00", "tag10", "tag20"]


async def test_fanout_pipeline_reaches_agents_on_other_nodes(nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Talker:ann", "Talker:ben")
        await nodes(ep, "Talker:cat")
        with anyio.fail_after(30):
            replies = await fanout_pipeline([rt.ref("ann"), rt.ref("ben"), rt.ref("cat")],
                                            Msg("host", "go", "user"))
    assert [r.content for r in replies] == [f"{n} spoke after 0" for n in ("ann", "ben", "cat")]


async def test_a_fanout_times_out_per_target_and_a_dead_node_fails_its_share(
        nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Echo:quick", "Slow:late:30")
        victim = await nodes(ep, "Slow:doomed:3600", "Slow:doomed2:3600")
        with anyio.fail_after(40):
            got = await rt.call_many(["quick", "late"], "hi", timeout=5,
                                     return_exceptions=True)
            assert got[0] == "hi" and isinstance(got[1], CallTimeout)

            async def kill_soon() -> None:
                await anyio.sleep(0.5)
                os.kill(victim.proc.pid, signal.SIGKILL)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_soon)
                got = await rt.call_many(["quick", "doomed", "doomed2"], "hi", timeout=15,
                                         return_exceptions=True)
    assert got[0] == "hi"
    assert all(isinstance(e, PeerLost) for e in got[1:]), got


async def test_a_remote_fanout_interrupts_its_handlers_on_timeout_and_on_cancel(
        nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Echo:e1", "Echo:e2")
        with anyio.fail_after(30):
            got = await rt.call_many(["e1", "e2"], "hang", timeout=1, return_exceptions=True)
            assert all(isinstance(e, CallTimeout) for e in got), got
            # interrupted: the next call is not queued behind an hour's sleep
            assert await rt.call_many(["e1", "e2"], "where", timeout=5) == ["", ""]
            with anyio.move_on_after(0.5):
                await rt.call_many(["e1", "e2"], "hang", timeout=60)
            assert await rt.call_many(["e2", "e1"], "where", timeout=5) == ["", ""]


async def test_a_remote_fanout_follows_an_actor_that_moved(nodes: Any) -> None:
    async with head() as rt:
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, "Echo:stay:s", "Echo:mover:first")
        with anyio.fail_after(30):
            assert await rt.call_many(["stay", "mover"], "where") == ["s", "first"]
            assert await rt.call_many(["mover"], "leave") == ["bye"]  # the head's cache
            await nodes(ep, "Echo:mover:second")  # still names the first node: asked again
            assert await rt.call_many(["stay", "mover"], "where") == ["s", "second"]


async def test_call_many_with_a_message_per_actor_across_nodes(nodes: Any) -> None:
    async with head() as rt:
        stats = rt.transport.stats  # type: ignore[attr-defined]
        ep = rt.transport.endpoint  # type: ignore[attr-defined]
        await nodes(ep, *(f"Echo:p0{i}:tag0{i}" for i in range(4)), "Failing:bad",
                    "Echo:mover:first")
        await nodes(ep, *(f"Echo:p1{i}:tag1{i}" for i in range(4)))
        targets = [f"p{n}{i}" for i in range(4) for n in range(2)]  # nodes interleaved
        messages: list[Any] = [{"to": t, "n": k} for k, t in enumerate(targets)]
        targets += ["bad", "ghost", "mover", "p00"]
        messages += ["x", "y", "where", "where"]
        with anyio.fail_after(30):
            before = stats["call_many_frames"]
            got = await rt.call_many(targets, PerActor(messages), return_exceptions=True)
            assert stats["call_many_frames"] - before == 2  # one frame per node
            # a message that is a list is one message; a blob goes as its own frame
            assert await rt.call_many(["p00", "p10"], PerActor([["a", "b"], b"\0" * 100_000])
                                      ) == [["a", "b"], 100_000]
            assert await rt.call_many(["mover"], PerActor(["leave"])) == ["bye"]
            await nodes(ep, "Echo:mover:second")  # the cache still names the first node
            moved = await rt.call_many(["p11", "mover"], PerActor(["where", "where"]))
    assert got[:8] == messages[:8]
    assert isinstance(got[8], HandlerError) and "cannot handle 'x'" in str(got[8])
    assert isinstance(got[9], ActorNotFound)
    assert got[10:] == ["first", "tag00"]
    assert moved == ["tag11", "second"]


async def test_own_messages_distinct_identical_and_malformed_across_nodes(nodes: Any) -> None:
    """One fan-out gives each agent on two node processes its own message: distinct ones,
    one ``Msg`` object given to several agents (it travels once, yet each agent gets an
    independent copy) and messages with blocks and metadata; a malformed per-target frame
    gets a clear error, reaches no agent, and the node goes on serving."""
    async with head() as rt:
        t: ZmqTransport = rt.transport  # type: ignore[assignment]
        await nodes(t.endpoint, *(f"Keeper:k0{i}" for i in range(3)), node_id="own-0")
        await nodes(t.endpoint, *(f"Keeper:k1{i}" for i in range(3)), node_id="own-1")
        targets = [f"k{n}{i}" for i in range(3) for n in range(2)]  # the nodes interleaved
        same = Msg("host", "one for many", "user")
        rich = Msg("host", [TextBlock(text="look")], "user", metadata={"tags": ["x"]})
        messages = [same, same, Msg("host", "for k01 only", "user"), same, rich, rich]
        with anyio.fail_after(30):
            before = t.stats["call_many_frames"]
            got = await rt.call_many(targets, PerActor(messages))
            assert t.stats["call_many_frames"] - before == 2  # one frame per node
            kept = await rt.call_many(targets, "kept")
        assert [m.content for m in got] == ["kept 1"] * 6
        assert [m.name for m in got] == targets
        for target, message, [[name, metadata, content]] in zip(targets, messages, kept,
                                                                 strict=True):
            assert name == target  # no other agent's mark
            assert metadata == {**(message.metadata or {}), "kept_by": [target]}
            if isinstance(message.content, str):
                assert content == message.content
            else:
                assert content == [TextBlock(text="look"), TextBlock(text=f"seen by {target}")]
        # the caller's messages are as they were
        assert same.name == "host" and same.metadata is None
        assert rich.metadata == {"tags": ["x"]} and rich.content == [TextBlock(text="look")]

        def frame(each: bytes) -> bytes:
            return encode([Op.CALL, ["k00", "k01"], each, 10.0, True])

        msg = Msg("host", "x", "user")
        bad_role = Msg.model_construct(id="i", name="n", role="boss",  # type: ignore[arg-type]
                                       content="x",
                                       metadata=None, timestamp="t")
        columns = [["i", "j"], ["n", "n"], ["user", "user"], ["c", "c"], [None, None],
                   ["t", "t"]]  # ids, names, roles, contents, metadata, timestamps
        none: list[Any] = [[]] * 6  # no plain message
        malformed = {  # what is wrong: (the per-target part, what the error says)
            "one message for two targets": (encode_each([msg]), "1 values for 2 targets"),
            "three for two": (encode_each([msg, msg, msg]), "3 values for 2 targets"),
            "an unknown role": (encode([2, None, *columns[:2], ["user", "boss"],
                                        *columns[3:], []]), "unknown role 'boss'"),
            "a number as an id": (encode([2, None, ["i", 5], *columns[1:], []]),
                                  "ids are not a list of strings"),
            "a column too short": (encode([2, None, *columns[:3], ["c"], *columns[4:], []]),
                                   "1 message contents for 2 messages"),
            "an index out of range": (encode([2, [0, 1], ["i"], ["n"], ["user"], ["c"],
                                              [None], ["t"], []]),
                                      "index is not one position"),
            "a position taken twice": (encode([2, None, *none, [[0, 1], [0, 2]]]),
                                       "bad position 0"),
            "a message failing validation": (encode([2, None, *none,
                                                     [[0, bad_role], [1, "x"]]]),
                                             "Input should be 'user'"),
            "the old form, a list": (encode([msg, msg]), "not a list of 9 parts"),
            "not msgpack": (b"\xc1\xc1", "malformed payload"),
        }
        with anyio.fail_after(30):
            for each, says in malformed.values():
                with pytest.raises(ActorError, match=f"^undecodable payload: .*{says}"):
                    await t._calls.request("own-0", Op.CALL_MANY, frame(each), 10)
            assert await rt.call_many(["k00", "k01"], "kept") == [kept[0], kept[2]]  # nothing
            got = await rt.call_many(["k00", "k01"], PerActor([msg, msg]))
        assert [m.content for m in got] == ["kept 2"] * 2
