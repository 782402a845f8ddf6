"""``agentplex serve MODEL``: any chat model over the OpenAI chat-completions wire."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..model import ChatModelBase

__all__ = ["serve"]


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as keyword arguments (a value is JSON when it parses, else text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"options are KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def load_chat_model(spec: str, **kwargs: Any) -> ChatModelBase:
    """``init_chat_model(spec, **kwargs)``; a model that cannot be built here (no API key,
    an unknown provider or argument, a local model not on this machine) ends the command
    with its error on one line (exit code 2) instead of a traceback."""
    from ..model import ModelError, init_chat_model

    try:
        return init_chat_model(spec, **kwargs)
    except (ModelError, ValueError, TypeError, ImportError) as exc:
        typer.echo(f"error: cannot use the model {spec!r}: {exc}", err=True)
        raise typer.Exit(2) from None


def quiet_transformers() -> None:
    """Keep Transformers' own progress bars and warnings out of the transcript (for a
    command about to load a local model)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def serve(
    model: Annotated[str, typer.Argument(
        help="Any init_chat_model string: transformers:default, openai:gpt-4o-mini, ...")],
    host: Annotated[str, typer.Option(
        help="Address to listen on (loopback unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one).")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        help="Key clients must send as 'Authorization: Bearer KEY' "
             "(default: $AGENTPLEX_API_KEY; none: no key).")] = None,
    served_model_name: Annotated[str | None, typer.Option(
        help="The name clients ask for (default: MODEL as given).")] = None,
    max_concurrency: Annotated[int, typer.Option(
        min=1, help="Requests answered at once.")] = 256,
    max_queue: Annotated[int, typer.Option(
        min=0, help="Requests waiting beyond those; more get HTTP 429.")] = 1024,
    option: Annotated[list[str], typer.Option(
        help="KEY=VALUE argument for the model (JSON values), e.g. torch_dtype=bfloat16. "
             "Repeatable.")] = [],  # noqa: B006 - typer reads the default
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    allow_host: Annotated[list[str], typer.Option(
        help="A Host name to answer (repeatable; '*' for any). Default: loopback names "
             "without a key, any with one.")] = [],  # noqa: B006 - typer reads the default
) -> None:
    """Serve MODEL over the OpenAI chat-completions wire (/v1/chat/completions, /v1/models,
    /health, /metrics)."""
    from ..serving import run_server

    key = api_key if api_key is not None else os.environ.get("AGENTPLEX_API_KEY") or None
    if host not in ("127.0.0.1", "localhost", "::1") and key is None and not allow_host:
        typer.echo(f"warning: serving on {host} without --api-key: only requests naming a "
                   "loopback Host (localhost, 127.0.0.1) are answered; set a key or "
                   "--allow-host", err=True)
    if model.startswith("transformers"):
        quiet_transformers()
    chat_model = load_chat_model(model, stream=True, **parse_options(option))
    name = served_model_name or model

    def ready(url: str) -> None:
        print(f"agentplex serve: {name} at {url}", flush=True)

    run_server({name: chat_model}, host=host, port=port, api_key=key,
               max_concurrency=max_concurrency, max_queue=max_queue, log_level=log_level,
               ready=ready, allowed_hosts=allow_host or None)
