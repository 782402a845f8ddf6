"""The user's code, shipped over the bus to nodes that accept it.

A *code package* is a file or a folder of ``.py`` files, packed as a deterministic zip
and named by the SHA-256 of that archive (:func:`pack_code`). A node started with
``--accept-code`` keeps a :class:`CodeCache`: it checks the archive against its name
(size, members: no path outside the package, no links, only ``.py`` files), unpacks it
once per hash into a temporary folder and imports it as the package
``agentplex_code_<sha256>`` — two versions of one file are two packages and never
collide — then allows exactly the modules the sender named. :func:`ship_code` sends a
package to the node agents of a running cluster; a node that does not accept code
refuses with :class:`~agentplex.cluster.CodeRefused`, a package that does not check out
with :class:`~agentplex.cluster.CodeRejected`.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..runtime import Runtime
from ._bus_node import node_agent_name
from ._errors import CodeRejected
from ._ops import ask

__all__ = ["MAX_CODE_BYTES", "MAX_CODE_FILES", "CodeCache", "CodePackage", "code_package_name",
           "pack_code", "ship_code"]

MAX_CODE_BYTES = 16 * 2**20
"""The most bytes a code package may hold, packed or unpacked."""

MAX_CODE_FILES = 2000
"""The most files a code package may hold."""

PREFIX = "agentplex_code_"
_STAMP = (1980, 1, 1, 0, 0, 0)  # every member's time: the same files give the same archive


def code_package_name(sha256: str) -> str:
    """The package a code package is imported as: ``agentplex_code_<sha256>``."""
    return PREFIX + sha256


@dataclass(frozen=True)
class CodePackage:
    """A packed code package: its ``archive`` (zip bytes), its ``sha256`` (the archive's)
    and its ``modules`` (dotted names inside the package, ``opsim`` or ``sims.opsim``)."""

    archive: bytes
    sha256: str
    modules: tuple[str, ...]

    @property
    def package(self) -> str:
        """The package it is imported as on every node (and in the driver)."""
        return code_package_name(self.sha256)

    def qualified(self, module: str) -> str:
        """``module`` of the package as it is imported: ``agentplex_code_<sha>.module``."""
        if module not in self.modules:
            raise CodeRejected(f"{module!r} is not a module of code package "
                               f"{self.sha256[:12]} (it holds {', '.join(self.modules)})")
        return f"{self.package}.{module}"

    def rename(self, target: str) -> str:
        """``"module:Class"`` as imported from the package, when ``module`` is one of its
        modules; any other target unchanged."""
        module, sep, name = target.partition(":")
        return f"{self.qualified(module)}{sep}{name}" if module in self.modules else target


def _module_name(relative: PurePosixPath) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def pack_code(path: str | os.PathLike[str], *, max_bytes: int = MAX_CODE_BYTES
              ) -> CodePackage:
    """Pack a ``.py`` file, or a folder's ``.py`` files (``__pycache__`` and hidden
    folders left out), into a :class:`CodePackage`; :class:`CodeRejected` when there is
    nothing to pack, a name is not importable or it is over ``max_bytes``."""
    root = Path(path).expanduser().resolve()
    if root.is_file():
        if root.suffix != ".py":
            raise CodeRejected(f"{root.name}: a code package is a .py file or a folder")
        files = [(root, PurePosixPath(root.name))]
    elif root.is_dir():
        files = sorted(((p, PurePosixPath(p.relative_to(root).as_posix()))
                        for p in root.rglob("*.py") if p.is_file() and not any(
                            part.startswith(".") or part == "__pycache__"
                            for part in p.relative_to(root).parts)), key=lambda f: f[1])
    else:
        raise CodeRejected(f"no file or folder {path}")
    if not files:
        raise CodeRejected(f"{root}: no .py files to ship")
    if len(files) > MAX_CODE_FILES:
        raise CodeRejected(f"{root}: {len(files)} files, more than {MAX_CODE_FILES}")
    buffer = io.BytesIO()
    total = 0
    modules = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file, name in files:
            data = file.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise CodeRejected(f"{root}: more than {max_bytes:,} bytes of code")
            module = _module_name(name)
            if module and not all(p.isidentifier() for p in module.split(".")):
                raise CodeRejected(f"{name}: not an importable module name")
            if module:
                modules.append(module)
            info = zipfile.ZipInfo(str(name), _STAMP)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise CodeRejected(f"{root}: its archive is more than {max_bytes:,} bytes")
    return CodePackage(data, hashlib.sha256(data).hexdigest(), tuple(modules))


def _check_members(archive: zipfile.ZipFile, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The archive's file members, each checked: a relative path inside the package, a
    plain ``.py`` file (no link), and all of them within ``max_bytes`` unpacked."""
    members = archive.infolist()
    if len(members) > MAX_CODE_FILES:
        raise CodeRejected(f"{len(members)} members, more than {MAX_CODE_FILES}")
    total = 0
    files = []
    for info in members:
        name = info.filename
        path = PurePosixPath(name)
        if ("\\" in name or "\x00" in name or path.is_absolute() or ":" in name
                or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))):
            raise CodeRejected(f"member {name!r} is not a path inside the package")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the archiver did not say
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise CodeRejected(f"member {name!r} is not a plain file")
        if info.is_dir():
            continue
        if path.suffix != ".py":
            raise CodeRejected(f"member {name!r} is not a .py file")
        total += info.file_size
        if total > max_bytes:
            raise CodeRejected(f"more than {max_bytes:,} bytes unpacked")
        files.append(info)
    return files


def _unpack(archive_bytes: bytes, dest: Path, max_bytes: int) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
    except zipfile.BadZipFile as exc:
        raise CodeRejected(f"not a zip archive: {exc}") from None
    with archive:
        for info in _check_members(archive, max_bytes):
            target = dest.joinpath(*PurePosixPath(info.filename).parts)
            if not target.resolve().is_relative_to(dest.resolve()):
                raise CodeRejected(f"member {info.filename!r} leaves the package")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src:
                data = src.read(max_bytes + 1)  # never trust the declared size alone
            if len(data) != info.file_size:
                raise CodeRejected(f"member {info.filename!r} is not the size it declares")
            target.write_bytes(data)


class CodeCache:
    """Code packages unpacked under one temporary folder (``root``; removed by
    :meth:`close`), each once per hash, importable as ``agentplex_code_<sha256>``: the
    folder is put on this process's import path and on ``PYTHONPATH`` (for the worker
    processes a node starts)."""

    def __init__(self, *, max_bytes: int = MAX_CODE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.root = Path(tempfile.mkdtemp(prefix="agentplex-code-"))
        self.installed: dict[str, tuple[str, ...]] = {}
        """The modules imported so far, by package hash."""
        entry = str(self.root)
        sys.path.insert(0, entry)
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([entry, *([old] if old else [])])

    def install(self, sha256: str, archive: bytes, modules: Sequence[str]) -> list[str]:
        """Check ``archive`` against its name ``sha256``, unpack it (once per hash) and
        import ``modules`` from it; the modules' names as imported
        (``agentplex_code_<sha256>.<module>``), which the caller may allow."""
        if not (isinstance(sha256, str) and len(sha256) == 64
                and all(c in "0123456789abcdef" for c in sha256)):
            raise CodeRejected(f"{sha256!r:.80} is not a SHA-256 in hex")
        if not isinstance(archive, bytes):
            raise CodeRejected("the archive is not bytes")
        if len(archive) > self.max_bytes:
            raise CodeRejected(f"the archive is {len(archive):,} bytes, more than "
                               f"{self.max_bytes:,}")
        got = hashlib.sha256(archive).hexdigest()
        if got != sha256:
            raise CodeRejected(f"the archive's SHA-256 is {got}, not the {sha256} it is "
                               "named by")
        if not modules or not all(isinstance(m, str) and m and all(
                p.isidentifier() for p in m.split(".")) for m in modules):
            raise CodeRejected(f"modules to import: {list(modules)!r:.200}")
        package = code_package_name(sha256)
        folder = self.root / package
        if sha256 not in self.installed:
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.root))
            try:
                _unpack(archive, staging, self.max_bytes)
                staging.rename(folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self.installed[sha256] = ()
            importlib.invalidate_caches()
        names = []
        for module in modules:
            name = f"{package}.{module}"
            if not folder.joinpath(*module.split(".")).with_suffix(".py").is_file() and \
                    not folder.joinpath(*module.split("."), "__init__.py").is_file():
                raise CodeRejected(f"code package {sha256[:12]} holds no module {module!r}")
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise CodeRejected(f"importing {module!r} of code package {sha256[:12]} "
                                   f"failed: {type(exc).__name__}: {exc}") from exc
            names.append(name)
        self.installed[sha256] = tuple(dict.fromkeys([*self.installed[sha256], *modules]))
        return names

    def close(self) -> None:
        """Remove the folder (what was imported stays imported)."""
        shutil.rmtree(self.root, ignore_errors=True)


async def ship_code(runtime: Runtime, nodes: Sequence[str], package: CodePackage,
                    modules: Sequence[str], *, timeout: float = 60.0) -> dict[str, list[str]]:
    """Send ``package`` to the node agents of ``nodes`` (ids), each to import and allow
    ``modules`` of it; what each node now allows, by node. Raises what a node refused with
    (:class:`~agentplex.cluster.CodeRefused`, :class:`~agentplex.cluster.CodeRejected`)."""
    request: dict[str, Any] = {"op": "code", "sha256": package.sha256,
                               "archive": package.archive, "modules": list(modules)}
    out = {}
    for node in nodes:
        out[node] = list(await ask(runtime.ref(node_agent_name(node)), request,
                                   timeout=timeout))
    return out
