""":class:`Tool`: a tool as a class, with typed inputs and outputs and a lazy ``setup()``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from ._schema import FunctionSchema, function_schema

__all__ = ["Tool"]

_MODALITY_TYPES = {"text": "string", "image": "string", "audio": "string", "video": "string"}


class Tool:
    """Base class for tools that need more than a function.

    Subclasses set ``name`` and ``description`` and implement :meth:`forward` (sync or
    async, may be a generator that streams partial results). The inputs come from
    ``forward``'s signature and docstring, or from ``inputs`` when it is set: a mapping of
    input name to a JSON schema (``{"type": "string", "description": ...}``; the modalities
    ``text`` / ``image`` / ``audio`` / ``video`` are accepted as types and mean a string,
    such as a path or URL). Inputs with a ``default`` are optional. Transformers-4.37-style
    ``inputs = ["text", "image"]`` (one modality per ``forward`` parameter, in order) is
    accepted too: names, defaults and docs then come from ``forward``. ``outputs`` lists
    what ``forward`` returns: ``text``, or ``image`` / ``audio`` / ``video`` to turn returned
    bytes, arrays and tensors into that medium (audio at ``samplerate``).

    :meth:`setup` runs once, on first use, not at construction: put expensive work there
    (loading a model, opening a connection).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[dict[str, dict[str, Any]] | list[str] | None] = None
    outputs: ClassVar[list[str]] = ["text"]
    samplerate: ClassVar[int] = 16000
    """Sample rate of audio returned as a bare array (``outputs = ["audio"]``)."""
    blocking: ClassVar[bool] = False
    """``setup`` and calls block (model loading and inference): run them in a thread."""

    def __init__(self) -> None:
        self.is_initialized = False
        self._setup_lock: asyncio.Lock | None = None

    def setup(self) -> Any:
        """Expensive initialisation, run once before the first call (may be async)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work; the arguments are the tool's inputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def entry_point(self) -> Callable[..., Any]:
        """What a call runs with the tool's inputs: :meth:`forward` (a
        :class:`PipelineTool` chains ``encode``, ``forward`` and ``decode``)."""
        return self.forward

    def _schema_source(self) -> Callable[..., Any]:
        return self.entry_point()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run :meth:`setup` if needed, then the tool (awaited when async; in a thread
        when ``blocking``)."""
        await self.ensure_setup()
        entry = self.entry_point()
        if self.blocking and not inspect.iscoroutinefunction(entry):
            return await asyncio.to_thread(entry, *args, **kwargs)
        result = entry(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def ensure_setup(self) -> None:
        """Run :meth:`setup` unless it already ran."""
        if self.is_initialized:
            return
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self.is_initialized:
                return
            if self.blocking and not inspect.iscoroutinefunction(self.setup):
                await asyncio.to_thread(self.setup)
            else:
                result = self.setup()
                if inspect.isawaitable(result):
                    await result
            self.is_initialized = True

    def schema(self, preset: Iterable[str] = ()) -> FunctionSchema:
        """The tool's name, description and argument schema, without the ``preset``
        arguments (those the toolkit always passes itself)."""
        hidden = set(preset)
        name = self.name or type(self).__name__
        description = self.description or None
        if self.inputs is None:
            return function_schema(self._schema_source(), name=name, description=description,
                                   preset=hidden)
        if isinstance(self.inputs, (list, tuple)):
            return self._schema_from_modalities(list(self.inputs), name, description, hidden)
        if not isinstance(self.inputs, dict):
            raise TypeError(f"{type(self).__name__}.inputs must be a dict of input name to "
                            f"schema or a list of modalities, not {type(self.inputs).__name__}")
        properties: dict[str, Any] = {}
        required: list[str] = []
        for key, spec in self.inputs.items():
            if key in hidden:
                continue
            if not isinstance(spec, dict):
                raise TypeError(f"{type(self).__name__}.inputs[{key!r}] must be a JSON schema "
                                f"dict, not {type(spec).__name__}")
            prop = dict(spec)
            kind = prop.get("type")
            if isinstance(kind, str) and kind in _MODALITY_TYPES:
                prop["type"] = _MODALITY_TYPES[kind]
            properties[key] = prop
            if "default" not in prop and not prop.get("nullable"):
                required.append(key)
        parameters: dict[str, Any] = {"type": "object", "properties": properties,
                                      "additionalProperties": False}
        if required:
            parameters["required"] = required
        return FunctionSchema(name=name, description=self.description, parameters=parameters)

    def _schema_from_modalities(self, modalities: list[str], name: str,
                                description: str | None, hidden: set[str]) -> FunctionSchema:
        source = self._schema_source()
        params = [p for p in inspect.signature(source).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if len(modalities) != len(params):
            raise TypeError(
                f"{type(self).__name__}.inputs lists {len(modalities)} modalities but "
                f"forward() takes {len(params)} arguments ({', '.join(p.name for p in params)})")
        unknown = [m for m in modalities if m not in _MODALITY_TYPES]
        if unknown:
            raise TypeError(f"{type(self).__name__}.inputs has unknown modalities {unknown}; "
                            f"use {sorted(_MODALITY_TYPES)}")
        schema = function_schema(source, name=name, description=description, preset=hidden)
        properties = schema.parameters.get("properties", {})
        for param, modality in zip(params, modalities, strict=True):
            prop = properties.get(param.name)
            if prop is not None and "type" not in prop and "anyOf" not in prop:
                prop["type"] = _MODALITY_TYPES[modality]
        return schema

    @property
    def media(self) -> str | None:
        """The medium returned bytes are wrapped as, from ``outputs``."""
        first = self.outputs[0] if self.outputs else "text"
        return first if first in ("image", "audio", "video") else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
