"""A bus node in its own OS process, for the tests: hosts actors until stdin closes.

Usage: node.py HEAD_ENDPOINT|- [--curve] [--id NODE] [Class:name[:arg] ...]
Prints ``READY <endpoint>`` once its actors are registered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import bus_actors

from agentplex import Runtime
from agentplex.bus import KeyPair, ZmqTransport, keypair_from_env


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("head")
    p.add_argument("actors", nargs="*")
    p.add_argument("--id", default=None)
    p.add_argument("--curve", action="store_true")
    p.add_argument("--bind", default="tcp://127.0.0.1:0")
    a = p.parse_args()
    keys: KeyPair | None = keypair_from_env() if a.curve else None
    t = ZmqTransport(
        a.bind,
        head=None if a.head == "-" else a.head,
        head_key=os.environ.get("HEAD_KEY"),
        node_id=a.id,
        keys=keys,
        allow=[k for k in os.environ.get("ALLOW_KEYS", "").split(",") if k],
        heartbeat_interval=0.2,
        heartbeat_timeout=1.5,
        spawn_allow=["bus_actors"],
    )
    mailbox = int(os.environ.get("MAILBOX", "1024"))
    async with Runtime(t, default_timeout=30, mailbox_size=mailbox) as rt:
        for spec in a.actors:
            cls, name, *arg = spec.split(":")
            actor = getattr(bus_actors, cls)(*arg) if arg else (
                getattr(bus_actors, cls)(name) if cls == "Talker" else getattr(bus_actors, cls)())
            await rt.spawn(actor, name)
        print("READY", t.endpoint, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
