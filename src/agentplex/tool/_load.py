""":func:`load_tool`: a tool from a local folder or the Hugging Face cache, offline.

A tool folder holds ``tool_config.json`` and, for a tool written in Python, ``tool.py``
(Transformers' and smolagents' layout). A config naming a ``task`` (and ``model``) and no
code gives a :func:`pipeline_tool`. Code is only imported with ``trust_remote_code=True``.
Nothing is downloaded: a hub repository must already be in the local cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from ._errors import UntrustedCodeError
from ._modules import import_file
from ._pipeline import pipeline_tool
from ._schema import FunctionSchema
from ._tool import Tool

__all__ = ["load_tool"]

_CONFIG = "tool_config.json"
_CODE = "tool.py"


def load_tool(repo_or_path: str | os.PathLike[str], *, trust_remote_code: bool = False,
              revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
              **kwargs: Any) -> Tool:
    """Load the tool in a folder, or in a hub repository already in the local cache.

    Args:
        repo_or_path: a folder, or a repository id (``"owner/name"``) looked up as a
            Space, a model or a dataset in the Hugging Face cache (``HF_HUB_CACHE``,
            ``HF_HOME`` or ``~/.cache/huggingface/hub``).
        trust_remote_code: allow importing the folder's ``tool.py``. Read it first: it
            runs with this process's rights.
        revision: the cached revision (a branch name or commit; default ``main``).
        cache_dir: the hub cache to look in.
        kwargs: passed to the tool's constructor (or to :func:`pipeline_tool`).

    Raises:
        FileNotFoundError: no such folder, or the repository is not cached.
        UntrustedCodeError: the tool is code and ``trust_remote_code`` is false.
        ValueError: the folder holds no tool.
    """
    folder = _locate(str(repo_or_path), revision, cache_dir)
    config: dict[str, Any] = {}
    if (folder / _CONFIG).is_file():
        try:
            config = json.loads((folder / _CONFIG).read_text())
        except ValueError as exc:
            raise ValueError(f"{folder / _CONFIG} is not valid JSON: {exc}") from None
    code = folder / _CODE
    if code.is_file():
        if not trust_remote_code:
            raise UntrustedCodeError(
                f"loading {repo_or_path!r} would import and run {code}; read it, then pass "
                "trust_remote_code=True if you trust it")
        return _from_code(code, config, kwargs)
    if "task" in config:
        return pipeline_tool(config["task"], kwargs.pop("model", config.get("model")),
                             name=config.get("name"), description=config.get("description"),
                             **kwargs)
    raise ValueError(f"{folder} holds no tool: expected {_CODE}, or a {_CONFIG} naming a task")


def _locate(repo_or_path: str, revision: str | None,
            cache_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(repo_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    if repo_or_path.count("/") != 1 or path.is_absolute() or repo_or_path.startswith("."):
        raise FileNotFoundError(f"no tool folder {repo_or_path!r}")
    cache = Path(cache_dir) if cache_dir is not None else _hub_cache()
    owner, name = repo_or_path.split("/")
    for kind in ("spaces", "models", "datasets"):
        repo = cache / f"{kind}--{owner}--{name}"
        if not repo.is_dir():
            continue
        ref = revision or "main"
        ref_file = repo / "refs" / ref
        commit = ref_file.read_text().strip() if ref_file.is_file() else ref
        snapshot = repo / "snapshots" / commit
        if snapshot.is_dir():
            return snapshot
        raise FileNotFoundError(f"{repo_or_path!r} is cached at {repo} but not its revision "
                                f"{ref!r}")
    raise FileNotFoundError(f"{repo_or_path!r} is neither a folder nor in the hub cache "
                            f"{cache}; nothing is downloaded at run time")


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def _from_code(code: Path, config: dict[str, Any], kwargs: dict[str, Any]) -> Tool:
    digest = hashlib.sha256(str(code).encode()).hexdigest()[:12]
    module_name = f"agentplex_loaded_tool_{digest}"
    try:
        module = import_file(code, module_name)
    except ImportError as exc:
        if exc.path != str(code):
            raise
        raise ValueError(f"cannot import {code}") from None
    wanted = config.get("tool_class")
    candidates = [obj for obj in vars(module).values()
                  if inspect.isclass(obj) and obj.__module__ == module_name
                  and (wanted is None or obj.__name__ == wanted) and _is_tool_class(obj)]
    if not candidates:
        raise ValueError(f"{code} defines no tool class"
                         + (f" named {wanted!r}" if wanted else ""))
    if len(candidates) > 1:
        raise ValueError(f"{code} defines several tools ({[c.__name__ for c in candidates]}); "
                         f"name one as tool_class in {_CONFIG}")
    instance = candidates[0](**kwargs)
    tool = instance if isinstance(instance, Tool) else _Foreign(instance)
    for key in ("name", "description"):
        if config.get(key) and not getattr(tool, key):
            setattr(tool, key, config[key])
    return tool


def _is_tool_class(cls: type) -> bool:
    if issubclass(cls, Tool):
        return cls is not Tool
    return all(hasattr(cls, a) for a in ("name", "description", "inputs")) and (
        callable(getattr(cls, "forward", None)) or "__call__" in vars(cls))


class _Foreign(Tool):
    """A tool class written for another library (same attributes, no common base)."""

    def __init__(self, tool: Any) -> None:
        super().__init__()
        self.tool = tool
        self.name = str(getattr(tool, "name", "") or type(tool).__name__)  # type: ignore[misc]
        self.description = str(getattr(tool, "description", ""))  # type: ignore[misc]
        inputs = getattr(tool, "inputs", None)
        self.inputs = inputs if isinstance(inputs, (dict, list)) else None  # type: ignore[misc]
        outputs = getattr(tool, "outputs", None) or [getattr(tool, "output_type", "text")]
        self.outputs = [str(o) for o in outputs]  # type: ignore[misc]

    def setup(self) -> Any:
        setup = getattr(self.tool, "setup", None)
        return setup() if callable(setup) else None

    def entry_point(self) -> Any:
        forward = getattr(self.tool, "forward", None)
        return forward if callable(forward) else self.tool.__call__

    def schema(self, preset: Any = ()) -> FunctionSchema:
        schema = super().schema(preset)
        if isinstance(self.inputs, dict):  # smolagents marks optional inputs "nullable"
            props = schema.parameters.get("properties", {})
            for prop in props.values():
                prop.pop("nullable", None)
                if prop.get("type") == "any":
                    del prop["type"]
        return schema
