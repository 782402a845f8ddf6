"""Every exception class agentplex defines is an ``AgentplexError`` and lives in its package's
errors module (``<package>/_errors.py``, re-exported from the package), keeping the
built-in base users already catch.

The classes are found by importing every module under ``agentplex`` (lowlevel ones too),
so a new error anywhere is checked without editing this file. A module that cannot be
imported because an optional dependency is missing is skipped, and says so (``-rs``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import agentplex
from agentplex.errors import AgentplexError

ROOT = "agentplex.errors"
STANDALONE = "agentplex.agent._sandbox_worker"
"""Run as its own script (``python -I``) inside the code sandbox, it imports nothing of
agentplex; its signals never leave its process (they come back as a ``SandboxResult``)."""

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(agentplex.__path__, "agentplex.")
    if not m.name.endswith(".__main__") and m.name != STANDALONE  # __main__ runs the command
)

BUILTIN_BASES: dict[str, tuple[type[BaseException], ...]] = {
    "ActorExists": (ValueError,),
    "CallTimeout": (TimeoutError,),
    "PayloadTooLarge": (ValueError,),
    "FrameError": (ValueError,),
    "InsecureBindError": (ValueError,),
    "SpawnRefused": (PermissionError,),
    "DecodeError": (ValueError,),
    "EncodeError": (TypeError,),
    "ModelTimeoutError": (TimeoutError,),
    "InvalidRequestError": (ValueError,),
    "UnsupportedOptionError": (ValueError,),
    "MissingCredentialsError": (ValueError,),
    "ModelNotAvailableError": (FileNotFoundError,),
    "FallbackError": (ExceptionGroup,),
    "ReplayMissing": (LookupError,),
    "InvalidPrices": (ValueError,),
    "InvalidBudget": (ValueError,),
    "SandboxError": (RuntimeError,),
    "RemoteToolError": (RuntimeError,),
    "UntrustedCodeError": (PermissionError,),
    "BadChatRequest": (ValueError,),
    "EngineError": (RuntimeError,),
    "ServerFailed": (RuntimeError,),
    "NodesFailed": (RuntimeError,),
    "CodeRefused": (PermissionError,),
    "CodeRejected": (ValueError,),
}
"""The built-in bases users catch today, by class name (wherever the class lives)."""


def _try_import(name: str) -> ModuleType | str:
    """The module, or why it cannot be imported here (an optional dependency is missing)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "agentplex":
            return f"{name} needs {exc.name}, an optional dependency not installed here"
        raise


def _import(name: str) -> ModuleType:
    module = _try_import(name)
    if isinstance(module, str):
        pytest.skip(module)
    return module


def _defined_in(module: ModuleType) -> list[type[BaseException]]:
    return [value for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, BaseException)
            and value.__module__ == module.__name__]


def _all_errors() -> dict[str, type[BaseException]]:
    """Every exception class defined under agentplex, by ``module.qualname``."""
    found: dict[str, type[BaseException]] = {}
    for name in MODULES:
        module = _try_import(name)
        if not isinstance(module, str):
            found.update((f"{name}.{cls.__qualname__}", cls) for cls in _defined_in(module))
    return found


def test_the_root_is_exported_from_the_package() -> None:
    assert agentplex.AgentplexError is AgentplexError
    assert AgentplexError.__bases__ == (Exception,)


@pytest.mark.parametrize("name", MODULES)
def test_every_exception_derives_from_the_root(name: str) -> None:
    module = _import(name)
    stray = [cls.__qualname__ for cls in _defined_in(module)
             if not issubclass(cls, AgentplexError)]
    assert not stray, f"{name} defines exceptions outside AgentplexError: {stray}"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_exception_lives_in_its_packages_errors_module(name: str) -> None:
    """A private one (``_Name``), raised and caught in one module, may stay beside its code."""
    module = _import(name)
    public = [cls for cls in _defined_in(module) if not cls.__name__.startswith("_")]
    if not public or name == ROOT:
        return
    package_name, _, leaf = name.rpartition(".")
    assert leaf == "_errors", (
        f"{name} defines {[c.__name__ for c in public]}: move them to {package_name}._errors")
    package = importlib.import_module(package_name)
    for cls in public:
        assert getattr(package, cls.__name__, None) is cls, (
            f"{package_name} does not re-export {cls.__name__}")
        assert cls.__name__ in getattr(package, "__all__", ()), (
            f"{cls.__name__} is missing from {package_name}.__all__")


def test_errors_keep_the_builtin_bases_users_catch() -> None:
    errors = {cls.__name__: cls for cls in _all_errors().values()}
    missing = sorted(set(BUILTIN_BASES) - set(errors))
    assert not missing, f"renamed or removed (update BUILTIN_BASES if on purpose): {missing}"
    for name, bases in BUILTIN_BASES.items():
        for base in bases:
            assert issubclass(errors[name], base), f"{name} is no longer a {base.__name__}"


def test_public_error_names_are_unique_and_none_is_httpx_s() -> None:
    """Two errors of one name would make ``except Name`` depend on the import; httpx's names
    (``RequestError``, ``DecodingError``, ...) mean something else to anyone using httpx."""
    httpx = pytest.importorskip("httpx")
    public = [cls.__name__ for cls in _all_errors().values() if not cls.__name__.startswith("_")]
    assert len(public) == len(set(public)), sorted(n for n in public if public.count(n) > 1)
    theirs = {name for name, value in vars(httpx).items()
              if inspect.isclass(value) and issubclass(value, BaseException)}
    assert not set(public) & theirs


def test_docs_draw_every_public_error() -> None:
    index = Path(__file__).parents[1] / "docs" / "index.md"
    section = index.read_text().split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    drawn = set(re.findall(r"\b[A-Z]\w+\b", section))
    public = {cls.__name__ for cls in _all_errors().values() if not cls.__name__.startswith("_")}
    assert not public - drawn, f"docs/index.md's Errors tree misses {sorted(public - drawn)}"


def test_the_sandbox_worker_is_standalone() -> None:
    """The one module the walk leaves out imports nothing of agentplex (so it has no root to
    derive from); if it ever does, it joins the walk."""
    spec = importlib.util.find_spec(STANDALONE)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("agentplex")
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("agentplex") for a in node.names)
