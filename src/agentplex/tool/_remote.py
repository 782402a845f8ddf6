""":class:`RemoteTool`: a tool served by an HTTP endpoint (Transformers' ``RemoteTool``).

For a tool served by another process or node over the agentplex bus, host it in a
:class:`~agentplex.cluster.ToolActor` and call it through an
:class:`~agentplex.cluster.ActorTool`.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from ..message import AudioBlock, ImageBlock
from ._errors import RemoteToolError
from ._tool import Tool
from ._types import AgentAudio, AgentImage, AgentType, is_array, media_block, sniff_media

__all__ = ["RemoteTool"]


class RemoteTool(Tool):
    """A tool whose work is done by an HTTP endpoint.

    Each call POSTs :meth:`prepare_inputs`'s JSON to ``endpoint_url`` (with ``token`` as a
    bearer token) and returns :meth:`extract_outputs` of the answer: JSON, text, or an
    image or audio when the endpoint answers with such a content type.

    Args:
        endpoint_url: the URL to POST to (default: the class attribute).
        token: the bearer token, if the endpoint needs one.
        tool_class: the local tool this is a remote version of: its name, description and
            inputs describe this one, and positional arguments follow its signature.
        timeout: seconds one request may take.
        headers: more HTTP headers.

    Subclass it and override :meth:`prepare_inputs` / :meth:`extract_outputs` for an
    endpoint that speaks another shape.
    """

    endpoint_url: ClassVar[str | None] = None

    def __init__(self, endpoint_url: str | None = None, token: str | None = None,
                 tool_class: type[Tool] | None = None, *, timeout: float = 60.0,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__()
        url = endpoint_url or type(self).endpoint_url
        if not url:
            raise ValueError("RemoteTool needs an endpoint_url")
        self.url = url
        self.token = token
        self.tool_class = tool_class
        self.timeout = timeout
        self.headers = dict(headers or {})
        if tool_class is not None:  # what this class leaves at Tool's defaults
            for attr in ("name", "description", "inputs", "outputs", "samplerate"):
                if getattr(type(self), attr) == getattr(Tool, attr):
                    setattr(self, attr, getattr(tool_class, attr))
        self._client: Any = None

    def _schema_source(self) -> Callable[..., Any]:
        if self.tool_class is None:
            return self.forward
        return self._local().entry_point()

    def _local(self) -> Tool:
        """A bare instance of ``tool_class``, for its signature (nothing is loaded)."""
        assert self.tool_class is not None
        return self.tool_class.__new__(self.tool_class)

    def prepare_inputs(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON body for a call: ``{"inputs": ...}``; media are sent as base64.

        Positional arguments are named after ``tool_class``'s signature; a single input
        is sent bare (as Transformers does), several as an object.
        """
        if args:
            if self.tool_class is None:
                raise TypeError("positional arguments need a tool_class to name them")
            bound = inspect.signature(self._local().entry_point()).bind_partial(*args, **kwargs)
            kwargs = dict(bound.arguments)
        values = {k: _encode_input(v) for k, v in kwargs.items()}
        return {"inputs": next(iter(values.values())) if len(values) == 1 else values}

    def extract_outputs(self, outputs: Any) -> Any:
        """Post-process the endpoint's answer (the default returns it as is)."""
        return outputs

    async def forward(self, *args: Any, **kwargs: Any) -> Any:
        client = self._http()
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        import httpx

        try:
            response = await client.post(self.url, json=self.prepare_inputs(*args, **kwargs),
                                         headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise RemoteToolError(f"the endpoint {self.url} failed: {type(exc).__name__}: "
                                  f"{exc}") from None
        if response.status_code >= 400:
            raise RemoteToolError(f"the endpoint {self.url} answered HTTP "
                                  f"{response.status_code}: {response.text[:300]}",
                                  response.status_code)
        return self.extract_outputs(_decode_answer(response))

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError as exc:  # pragma: no cover - depends on the installation
                raise ImportError("RemoteTool needs httpx: pip install httpx") from exc
            self._client = httpx.AsyncClient()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _encode_input(value: Any) -> Any:
    if isinstance(value, AgentType) and not isinstance(value, str):
        value = value.to_block()
    block = value if isinstance(value, (ImageBlock, AudioBlock)) else (
        media_block(value) if not is_array(value) else None)
    if block is not None and block.source.type == "base64":
        return block.source.data
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if is_array(value):
        return value.tolist()
    return value


def _decode_answer(response: Any) -> Any:
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    body: bytes = response.content
    if kind.startswith("image/") or (not kind.startswith(("application/json", "text/"))
                                     and (sniff_media(body) or "").startswith("image/")):
        return AgentImage(body)
    if kind.startswith("audio/") or (sniff_media(body) or "").startswith("audio/"):
        return AgentAudio(body)
    if kind == "application/json":
        return response.json()
    return response.text
