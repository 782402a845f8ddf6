"""The head's role (keeping the directory and pushing it to every node) and a node's
side of it (saying hello, applying pushed snapshots, rejoining a restarted head)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..message import encode
from ..runtime import (
    ActorError,
)
from ._core import HEAD, _Core, log
from ._directory import parse_snapshot
from ._frames import (
    Header,
    Op,
)


class _HeadRole(_Core):
    """Directory traffic between the head and the nodes."""

    async def _hello(self) -> None:
        public = self.keys.public if self.keys else ""
        snap = await self._request(HEAD, Op.HELLO, encode(
            {"endpoint": self.endpoint, "key": public}), self.rpc_timeout)
        self._version = -1  # the head may have restarted with a fresh directory
        self._apply_snapshot(snap)

    async def _rejoin(self) -> None:
        """The head was lost: say hello again until it answers, then re-register."""
        try:
            await self._hello()
            runtime = self.runtime
            for name in list(runtime._cells):
                await self._request(HEAD, Op.REG, encode(name), self.rpc_timeout)
            for topic in list(runtime._topics):
                await self._request(HEAD, Op.SUB, encode(topic), self.rpc_timeout)
        except ActorError as exc:
            log.info("the head is still unreachable: %s", exc)
            return
        self._head_lost = False
        log.warning("rejoined the head at %s", self.head)

    def _apply_snapshot(self, snap: Any) -> None:
        version, nodes, topics = parse_snapshot(snap)
        if version < self._version:
            return
        self._version = version
        if HEAD in self._nodes and HEAD not in nodes:
            nodes[HEAD] = self._nodes[HEAD]
        for gone in set(self._nodes) - set(nodes):
            self._forget(gone)
        self._nodes, self._topics = nodes, topics

    def _forget(self, node: str) -> None:
        """Drop the cached names hosted by ``node``."""
        if any(h == node for h in self._names.values()):
            self._names = {n: h for n, h in self._names.items() if h != node}

    async def _push_state(self) -> None:
        assert self._dir is not None
        snap = self._dir.snapshot()
        for gone in set(self._nodes) - set(self._dir.nodes):
            self._forget(gone)
        self._nodes = dict(self._dir.nodes)
        self._topics = {t: set(v) for t, v in self._dir.topics.items()}
        data = encode(snap)
        others = [n for n in self._nodes if n != self.node_id]
        await asyncio.gather(
            *(self._request(n, Op.STATE, data, self.heartbeat_timeout) for n in others),
            return_exceptions=True)

    async def _head_op(self, h: Header, arg: Any, key: str | None = None) -> None:
        d = self._dir
        try:
            if d is None:
                raise ActorError(f"node {self.node_id!r} is not the head")
            result: Any = None
            if h.op == Op.HELLO:
                if not (isinstance(arg, dict) and isinstance(arg.get("endpoint"), str)
                        and isinstance(arg.get("key"), str)):
                    raise ActorError("malformed hello")
                if key is not None and arg["key"] != key:
                    raise ActorError("a hello must announce the key it is signed with")
                known = d.nodes.get(h.src)
                if key is not None and known is not None and known[1] != key:
                    raise ActorError(f"node id {h.src!r} belongs to another key")
                if known is not None:  # restarted: what waited on its past life has failed
                    self._peer_lost(h.src)
                d.add_node(h.src, arg["endpoint"], arg["key"])
                await self._push_state()
                result = d.snapshot()
            elif h.op == Op.BYE:
                if d.remove_node(h.src):
                    self._drop_peer(h.src)
                    await self._push_state()
                return
            elif not isinstance(arg, str):
                raise ActorError(f"malformed {h.op} request")
            elif h.op == Op.REG:
                d.register(arg, h.src)
            elif h.op == Op.UNREG:
                d.unregister(arg, h.src)
            elif h.op == Op.LOOKUP:
                result = d.lookup(arg)
            elif h.op == Op.SUB:
                d.subscribe(arg, h.src)
                await self._push_state()
            else:
                d.unsubscribe(arg, h.src)
                await self._push_state()
            self._reply(h, Op.REPLY, encode(result))
        except Exception as exc:
            self._reply_error(h, exc)
