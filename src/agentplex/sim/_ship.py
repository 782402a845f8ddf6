"""A run's scenario code shipped over the bus (``agentplex run FILE.py:Class --address URL
--ship-code``): the driver packs the file (or ``--ship-folder`` DIR, which holds it), imports
it under the package name of its SHA-256 like the nodes will, and sends it to every node of
the cluster before spawning (:meth:`Shipped.send`); each node, started with
``--accept-code``, allows exactly the scenario's module and the agent class's."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cluster import ClusterClient, CodePackage, pack_code
from ..cluster.lowlevel import CodeCache, ship_code
from ..runtime import Actor, Runtime
from ._errors import ScenarioError
from ._nodes import user_code

__all__ = ["Shipped", "ship_scenario"]

_cache: CodeCache | None = None


def _driver_cache() -> CodeCache:
    """This process's code packages (one folder, removed when the process exits)."""
    global _cache
    if _cache is None:
        _cache = CodeCache()
        atexit.register(_cache.close)
    return _cache


@dataclass(frozen=True)
class Shipped:
    """A scenario's code package, imported here as the nodes will import it."""

    package: CodePackage
    module: str
    """The scenario's module inside the package (``opsim``, ``sims.opsim``)."""
    scenario: str
    """The scenario as imported from the package: ``agentplex_code_<sha>.opsim:Class``."""

    def rename(self, agent: type[Actor] | str) -> type[Actor] | str:
        """A scenario's ``agent`` named as ``"module:Class"`` of the package, as imported
        from it (a class is already)."""
        return agent if isinstance(agent, type) else self.package.rename(agent)

    def modules(self, agent: type[Actor]) -> list[str]:
        """The package's modules the nodes allow: the scenario's and the agent's."""
        prefix = self.package.package + "."
        found = [self.module]
        if agent.__module__.startswith(prefix):
            found.append(agent.__module__.removeprefix(prefix))
        return list(dict.fromkeys(found))

    async def send(self, runtime: Runtime, client: ClusterClient, agent: type[Actor],
                   log: Callable[[str], None]) -> None:
        """Ship the package to every live node of the cluster (each must accept code:
        :class:`~agentplex.cluster.CodeRefused` otherwise)."""
        nodes = [n["node"] for n in await client.status() if n.get("alive")]
        if not nodes:
            raise ScenarioError("--ship-code: the cluster has no node to ship the code to")
        await ship_code(runtime, nodes, self.package, self.modules(agent))
        log(f"shipped code package {self.package.sha256[:12]} "
            f"({len(self.package.archive):,} bytes) to {len(nodes)} nodes")


def ship_scenario(scenario: str, folder: Path | None = None) -> Shipped:
    """Pack the scenario's file (``"path/file.py:Class"``), or ``folder`` of ``.py``
    files (which holds that file, or the module of ``"module:Class"``), and import it
    here from the package of its hash."""
    target, sep, cls = scenario.rpartition(":")
    if not sep or not target or not cls:
        raise ScenarioError(f"{scenario!r}: name the class, FILE.py:Class")
    code = user_code(scenario)
    root = folder.expanduser().resolve() if folder is not None else None
    if code.folder is None:
        if root is None:
            raise ScenarioError(f"--ship-code ships a scenario file (FILE.py:Class), or "
                                f"with --ship-folder a module of it, not {code.module!r}")
        module = code.module  # a module of the folder
    else:
        file = code.folder / f"{code.module}.py"
        if root is not None and not file.is_relative_to(root):
            raise ScenarioError(f"--ship-folder {folder} does not hold {file}")
        module = code.module if root is None else \
            ".".join(file.relative_to(root).with_suffix("").parts)
    package = pack_code(root if root is not None else file)
    if module not in package.modules:
        raise ScenarioError(f"--ship-folder {folder} holds no module {module!r}")
    _driver_cache().install(package.sha256, package.archive, [module])
    return Shipped(package, module, f"{package.qualified(module)}:{cls}")
