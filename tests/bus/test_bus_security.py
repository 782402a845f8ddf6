"""CURVE encryption and allow-lists, insecure binds, remote spawn allow-lists."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from agentplex import Runtime
from agentplex.bus import (
    InsecureBindError,
    KeyPair,
    ZmqTransport,
    generate_keys,
    keypair_from_env,
    load_keypair,
    load_public_key,
)
from agentplex.bus.lowlevel import Header, Op, to_frames
from agentplex.message import encode
from agentplex.runtime import ActorError, CallTimeout
from tests.support.actors import Echo

pytestmark = pytest.mark.anyio


def test_keys_files_and_env(tmp_path: Path) -> None:
    public, secret = generate_keys(tmp_path, "node")
    pair = load_keypair(secret)
    assert load_public_key(public) == pair.public
    assert (secret.stat().st_mode & 0o077) == 0
    env = {"AGENTPLEX_PUBLIC_KEY": pair.public, "AGENTPLEX_SECRET_KEY": pair.secret}
    assert keypair_from_env(env) == pair
    assert keypair_from_env({}) is None
    assert pair.secret not in repr(pair)


def test_non_loopback_bind_needs_keys_or_insecure() -> None:
    with pytest.raises(InsecureBindError):
        ZmqTransport("tcp://0.0.0.0:0")
    with pytest.raises(InsecureBindError):
        ZmqTransport("tcp://*:0")
    ZmqTransport("tcp://0.0.0.0:0", insecure=True)
    ZmqTransport("tcp://0.0.0.0:0", keys=KeyPair.generate())
    ZmqTransport("tcp://[::1]:0")


async def test_curve_cluster_and_refused_client(nodes: Any) -> None:
    head_keys, node_keys, rogue_keys = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    other_keys = KeyPair.generate()  # admitted, but not the key of "curve-node"
    head_t = ZmqTransport(keys=head_keys, allow=[node_keys.public, other_keys.public],
                          heartbeat_interval=0.2, heartbeat_timeout=1.5)
    async with Runtime(head_t, default_timeout=20) as rt:
        local = Echo()
        await rt.spawn(local, "local-echo")
        env = {"AGENTPLEX_PUBLIC_KEY": node_keys.public,
               "AGENTPLEX_SECRET_KEY": node_keys.secret, "HEAD_KEY": head_keys.public,
               "ALLOW_KEYS": head_keys.public}
        await nodes(head_t.endpoint, "Echo:secure-echo", env=env, curve=True,
                    node_id="curve-node")
        assert await rt.ref("secure-echo").call("over curve") == "over curve"
        assert [x async for x in rt.ref("secure-echo").stream(3)] == [
            "chunk-0", "chunk-1", "chunk-2"]

        # a node whose key is not on the head's allow-list cannot join
        with pytest.raises((CallTimeout, ActorError)):
            async with Runtime(ZmqTransport(head=head_t.endpoint, head_key=head_keys.public,
                                            keys=rogue_keys, rpc_timeout=1.5)):
                pass

        # raw clients, with the wrong key or without CURVE, send a well-formed tell
        header = Header(Op.TELL, "curve-node", None, "local-echo")
        frames = to_frames(header, encode("intruder"))
        ctx = zmq.asyncio.Context()

        def dealer(keys: KeyPair, routing_id: bytes | None = None) -> Any:
            """A raw client with ``keys``, connected to the head."""
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_secretkey = keys.secret.encode()
            sock.curve_publickey = keys.public.encode()
            sock.curve_serverkey = head_keys.public.encode()
            if routing_id is not None:
                sock.setsockopt(zmq.ROUTING_ID, routing_id)
            sock.connect(head_t.endpoint)
            return sock

        try:
            wrong = ctx.socket(zmq.DEALER)
            wrong.curve_secretkey = rogue_keys.secret.encode()
            wrong.curve_publickey = rogue_keys.public.encode()
            wrong.curve_serverkey = head_keys.public.encode()
            plain = ctx.socket(zmq.DEALER)
            for sock in (wrong, plain):
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(head_t.endpoint)
                for _ in range(5):
                    await sock.send_multipart(frames)
            # an admitted key cannot speak for another node
            other = dealer(other_keys)
            await other.send_multipart(to_frames(header, encode("impersonated")))
            # the same tell from the key "curve-node" joined with does arrive
            good = dealer(node_keys, routing_id=b"reused")
            await good.send_multipart(to_frames(header, encode("admitted")))
            for _ in range(100):
                if head_t.allow.refused and local.told and head_t.stats["dropped"]:
                    break
                await asyncio.sleep(0.1)
            # a routing id outlives nothing: an admitted key that takes the one a closed
            # connection had still speaks only for itself
            good.close(linger=0)
            dropped = head_t.stats["dropped"]
            await asyncio.sleep(0.5)
            thief = dealer(other_keys, routing_id=b"reused")
            await thief.send_multipart(to_frames(header, encode("stolen")))
            for _ in range(100):
                if head_t.stats["dropped"] > dropped or len(local.told) > 1:
                    break
                await asyncio.sleep(0.1)
        finally:
            ctx.destroy(linger=0)
        assert head_t.allow.refused >= 1
        assert local.told == ["admitted"]
        assert head_t.stats["dropped"] > dropped >= 1  # both impersonations


async def test_remote_spawn_honours_allow_list(nodes: Any) -> None:
    async with Runtime(ZmqTransport(), default_timeout=20) as rt:
        transport: ZmqTransport = rt.transport  # type: ignore[assignment]
        await nodes(transport.endpoint, node_id="worker")
        ref = await transport.spawn("worker", "tests.support.actors:Echo", "w", name="spawned")
        assert await ref.call("where") == "w"
        for path in ("os:system", "subprocess:Popen", "tests.support.actors",
                     "tests.support.actors:Missing", "tests.support.actors:asyncio"):
            with pytest.raises(ActorError, match=r"allow-list|not an actor|expected"):
                await transport.spawn("worker", path, "echo hacked", name="bad")


def test_keys_cli_generate_and_show(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agentplex.cli._keys import app

    runner = CliRunner()
    result = runner.invoke(app, ["generate", str(tmp_path), "--name", "alpha"])
    assert result.exit_code == 0, result.output
    pair = load_keypair(tmp_path / "alpha.key_secret")
    assert pair.public in result.output
    assert pair.secret not in result.output
    shown = runner.invoke(app, ["show", str(tmp_path / "alpha.key")])
    assert shown.output.strip() == pair.public


async def test_a_taken_port_fails_start_cleanly() -> None:
    async with Runtime(ZmqTransport()) as rt:
        taken = rt.transport.endpoint  # type: ignore[attr-defined]
        other = Runtime(ZmqTransport(taken))
        with pytest.raises(zmq.ZMQError):
            await other.start()
        await other.shutdown()


async def test_an_unjoined_key_cannot_make_a_node_resend_a_tell(nodes: Any) -> None:
    """A returned-tell error frame is only taken from a node that joined with its key: an
    admitted client that never joined cannot make the head re-send a tell as its own."""
    head_keys, node_keys, rogue_keys = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    head_t = ZmqTransport(keys=head_keys, allow=[node_keys.public, rogue_keys.public],
                          heartbeat_interval=0.2, heartbeat_timeout=1.5)
    async with Runtime(head_t, default_timeout=20) as rt:
        env = {"AGENTPLEX_PUBLIC_KEY": node_keys.public,
               "AGENTPLEX_SECRET_KEY": node_keys.secret, "HEAD_KEY": head_keys.public,
               "ALLOW_KEYS": head_keys.public}
        await nodes(head_t.endpoint, "Echo:target", env=env, curve=True, node_id="curve-node")
        victim = rt.ref("target")
        assert await victim.call("told") == []
        ctx = zmq.asyncio.Context()
        try:
            rogue = ctx.socket(zmq.DEALER)
            rogue.setsockopt(zmq.LINGER, 0)
            rogue.curve_secretkey = rogue_keys.secret.encode()
            rogue.curve_publickey = rogue_keys.public.encode()
            rogue.curve_serverkey = head_keys.public.encode()
            rogue.connect(head_t.endpoint)
            returned = {"type": "ActorNotFound", "message": "moved", "actor": "target",
                        "tell": encode("forged"), "sender": "someone"}
            for src in ("rogue", "curve-node"):  # its own unjoined id, or another node's
                await rogue.send_multipart(to_frames(
                    Header(Op.ERROR, src, None, "target"), encode(returned)))
            for _ in range(100):
                if head_t.stats["dropped"] >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            ctx.destroy(linger=0)
        assert head_t.stats["dropped"] >= 2
        await victim.tell("genuine")  # sent after the forged frames, so received after them
        for _ in range(100):
            if await victim.call("told"):
                break
            await asyncio.sleep(0.05)
        assert await victim.call("told") == ["genuine"]
        assert head_t.stats["tell_failed"] == 0
