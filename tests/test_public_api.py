"""Every agentplex package's ``__all__`` is sorted, importable and complete."""

import importlib
import pkgutil
import types

import pytest

import agentplex

SUBPACKAGES = sorted(
    f"agentplex.{m.name}" for m in pkgutil.iter_modules(agentplex.__path__) if m.ispkg
)
PACKAGES = ["agentplex", *SUBPACKAGES, "agentplex.model.local"]
LOWLEVEL = sorted(
    m.name for m in pkgutil.walk_packages(agentplex.__path__, "agentplex.")
    if m.name.rsplit(".", 1)[-1] == "lowlevel"
)


def test_every_lowlevel_module_is_checked() -> None:
    """The walk finds the plumbing modules of every layer, nested ones included."""
    assert {"agentplex.bus.lowlevel", "agentplex.model.lowlevel",
            "agentplex.runtime.lowlevel"} <= set(LOWLEVEL)


def _all(name: str) -> list[str]:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{name} has no __all__ list"
    return names


@pytest.mark.parametrize("name", PACKAGES + LOWLEVEL)
def test_all_is_sorted_and_unique(name: str) -> None:
    names = _all(name)
    assert names == sorted(set(names)), f"{name}.__all__ is not sorted (or has duplicates)"


@pytest.mark.parametrize("name", PACKAGES + LOWLEVEL)
def test_every_name_in_all_imports(name: str) -> None:
    module = importlib.import_module(name)
    for attr in _all(name):
        assert getattr(module, attr, None) is not None, f"{name}.{attr} does not import"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete(name: str) -> None:
    """Every public name the package's ``__init__`` defines or imports is listed."""
    module = importlib.import_module(name)
    public = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    missing = sorted(public - set(_all(name)))
    assert not missing, f"{name} has public names missing from __all__: {missing}"


def test_plumbing_stays_out_of_the_public_tracing_api() -> None:
    import agentplex.tracing as tracing
    from agentplex.tracing import lowlevel

    assert not set(tracing.__all__) & set(lowlevel.__all__)
    for plumbing in ("start_chat_span", "end_span", "use_span", "send_headers",
                     "inject_context", "extract_context", "set_current_actor"):
        assert not hasattr(tracing, plumbing), plumbing
        assert hasattr(lowlevel, plumbing), plumbing
