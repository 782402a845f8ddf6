"""Two hosts in their own network namespaces joined by a veth pair (root only).

The head binds a non-loopback address, so the bus must run with CURVE keys.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agentplex.bus import KeyPair
from tests.support.bus_node import Node, start_node

SUFFIX = f"{os.getpid() % 100000}"
NS_A, NS_B = f"apx{SUFFIX}a", f"apx{SUFFIX}b"
VETH_A, VETH_B = f"apv{SUFFIX}a", f"apv{SUFFIX}b"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[None]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    try:
        _ip("netns", "add", NS_A)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        _ip("netns", "add", NS_B)
        _ip("link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B)
        _ip("link", "set", VETH_A, "netns", NS_A)
        _ip("link", "set", VETH_B, "netns", NS_B)
        for ns, dev, addr in ((NS_A, VETH_A, "10.77.0.1/24"), (NS_B, VETH_B, "10.77.0.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_nodes_in_separate_namespaces(namespaces: None) -> None:
    keys = KeyPair.generate()  # one cluster key pair: each node admits its own key
    env = {"AGENTPLEX_PUBLIC_KEY": keys.public, "AGENTPLEX_SECRET_KEY": keys.secret,
           "HEAD_KEY": keys.public}
    started: list[Node] = []
    try:
        head = start_node("-", "Echo:near", env=env, curve=True, bind="tcp://10.77.0.1:0",
                          netns=NS_A)
        started.append(head)
        assert head.endpoint.startswith("tcp://10.77.0.1:")
        started.append(start_node(head.endpoint, "Echo:far", env=env, curve=True,
                                  bind="tcp://10.77.0.2:0", netns=NS_B))
        # a third process, in the head's namespace, drives the calls across the link
        out = subprocess.run(
            ["ip", "netns", "exec", NS_A, sys.executable, "-c", _CLIENT, head.endpoint],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["far-ok", "chunk-0", "chunk-1", "near-ok"]
    finally:
        for node in started:
            node.stop()


_CLIENT = """
import asyncio, os, sys
from agentplex import Runtime
from agentplex.bus import ZmqTransport, keypair_from_env

async def main() -> None:
    keys = keypair_from_env()
    t = ZmqTransport("tcp://10.77.0.1:0", head=sys.argv[1], head_key=keys.public, keys=keys)
    async with Runtime(t, default_timeout=20) as rt:
        print(await rt.ref("far").call("far-ok"))
        async for item in rt.ref("far").stream(2):
            print(item)
        print(await rt.ref("near").call("near-ok"))

asyncio.run(main())
"""

