"""Prices of hosted models in USD, offline.

The table is LiteLLM's (``model_prices_and_context_window_backup.json``, shipped inside the
``litellm`` package: found without importing litellm, read on first need), under a price
file of your own (``AGENTPLEX_PRICES=prices.json``, or :func:`set_prices`) whose entries
win. A price file is a JSON object in LiteLLM's format, keyed by the model as the
provider names it, ``provider:model`` or ``provider/model``::

    {"openai:my-fine-tune": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.2e-05,
                             "cache_read_input_token_cost": 1.5e-06}}

A model found nowhere has no price (``None``, never 0); local models (Transformers, MLX,
Ollama, scripted, a cluster's own model actors) have none either: they are counted in
CPU- or GPU-seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import InvalidPrices
from ._ledger import Ledger, LedgerEntry, Usage

__all__ = ["LOCAL_PROVIDERS", "PRICES_ENV", "Price", "Prices", "cost_totals", "prices",
           "set_prices"]

PRICES_ENV = "AGENTPLEX_PRICES"
"""The environment variable naming a price file."""

LOCAL_PROVIDERS = frozenset({"transformers", "mlx", "ollama", "scripted", "agentplex-remote"})
"""Providers whose models run on our own machines: no price, device seconds instead."""

_LITELLM_FILE = "model_prices_and_context_window_backup.json"
_PREFIXES: dict[str, tuple[str, ...]] = {
    "openai": ("", "openai/"),
    "azure_openai": ("azure/", ""),
    "anthropic": ("", "anthropic/"),
    "gemini": ("gemini/", ""),
    "dashscope": ("dashscope/", ""),
    "huggingface": ("huggingface/",),
    "litellm": ("",),
}
"""Where LiteLLM's table keeps each provider's models (tried in order)."""


class Price(BaseModel):
    """USD per token (cache reads and writes at the input price when not given)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    input_cost_per_token: float = 0.0
    output_cost_per_token: float = 0.0
    cache_read_input_token_cost: float | None = None
    cache_creation_input_token_cost: float | None = None

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs in USD."""
        read = self.cache_read_input_token_cost
        write = self.cache_creation_input_token_cost
        fresh = max(usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens, 0)
        return (fresh * self.input_cost_per_token
                + usage.cached_tokens * (self.input_cost_per_token if read is None else read)
                + usage.cache_creation_tokens
                * (self.input_cost_per_token if write is None else write)
                + usage.output_tokens * self.output_cost_per_token)


def _litellm_table() -> dict[str, Any]:
    """LiteLLM's own table, if the package is installed (empty otherwise)."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return {}
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / _LITELLM_FILE
        if path.is_file():
            try:
                table = json.loads(path.read_bytes())
            except (OSError, ValueError):
                return {}
            return table if isinstance(table, dict) else {}
    return {}


def _read_price_file(path: str | Path) -> dict[str, Price]:
    try:
        raw = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InvalidPrices(f"cannot read the price file {str(path)!r}: {exc}") from exc
    except ValueError as exc:
        raise InvalidPrices(f"the price file {str(path)!r} is not JSON: {exc}") from exc
    return _parse(raw, str(path))


def _parse(raw: Any, source: str) -> dict[str, Price]:
    if not isinstance(raw, dict):
        raise InvalidPrices(f"prices from {source} must be a JSON object of models, "
                            f"not {type(raw).__name__}")
    out: dict[str, Price] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise InvalidPrices(f"price of {name!r} in {source} must be an object")
        try:
            price = Price.model_validate(entry)
        except ValidationError as exc:
            raise InvalidPrices(f"price of {name!r} in {source}: {exc}") from exc
        if min(price.input_cost_per_token, price.output_cost_per_token,
               price.cache_read_input_token_cost or 0.0,
               price.cache_creation_input_token_cost or 0.0) < 0:
            raise InvalidPrices(f"price of {name!r} in {source} is negative")
        out[name] = price
    return out


class Prices:
    """A price table: your entries over LiteLLM's (see the module docstring)."""

    def __init__(self, own: Mapping[str, Price | Mapping[str, Any]] | str | Path | None = None,
                 *, litellm: bool = True) -> None:
        """``own``: a price file's path, or its entries; ``litellm``: fall back on the
        table shipped with LiteLLM when installed."""
        if own is None:
            self._own: dict[str, Price] = {}
        elif isinstance(own, (str, Path)):
            self._own = _read_price_file(own)
        else:
            self._own = _parse({k: v.model_dump() if isinstance(v, Price) else v
                                for k, v in own.items()}, "the given prices")
        self._use_litellm = litellm
        self._litellm: dict[str, Any] | None = None
        self._found: dict[tuple[str, str], Price | None] = {}
        self._lock = threading.Lock()

    def _table(self) -> dict[str, Any]:
        if self._litellm is None:
            self._litellm = _litellm_table() if self._use_litellm else {}
        return self._litellm

    def price(self, provider: str, model: str) -> Price | None:
        """``model``'s price as ``provider`` serves it; ``None``: no price known."""
        with self._lock:
            key = (provider, model)
            if key not in self._found:
                self._found[key] = self._lookup(provider, model)
            return self._found[key]

    def _lookup(self, provider: str, model: str) -> Price | None:
        for name in (f"{provider}:{model}", f"{provider}/{model}", model):
            if name in self._own:
                return self._own[name]
        if provider in LOCAL_PROVIDERS or not self._use_litellm:
            return None
        table = self._table()
        for prefix in _PREFIXES.get(provider, ("", f"{provider}/")):
            entry = table.get(prefix + model)
            if isinstance(entry, dict) and ("input_cost_per_token" in entry
                                            or "output_cost_per_token" in entry):
                try:
                    return Price.model_validate(entry)
                except ValidationError:
                    return None
        return None

    def cost(self, ledger: Ledger) -> float | None:
        """What the calls of ``ledger`` cost in USD (priced models only); ``None`` when
        none of its models has a price."""
        return self.costs(ledger)[0]

    def costs(self, ledger: Ledger) -> tuple[float | None, int]:
        """``(cost, calls without a price)`` of ``ledger``."""
        total: float | None = None
        unpriced = 0
        for entry in ledger.entries:
            price = self.price(entry.provider, entry.model)
            if price is None:
                unpriced += entry.calls
            else:
                total = (total or 0.0) + price.cost(entry)
        return total, unpriced


    def totals(self, ledger: Ledger) -> dict[str, Any]:
        """A manifest's cost totals: cached tokens, device seconds, ``cost_usd`` (``None``:
        no price for any model) and ``unpriced_calls``, then rows of the same (with calls
        and tokens) ``by_model``, ``by_round`` and ``by_agent_class``."""
        def row(entries: list[LedgerEntry]) -> dict[str, Any]:
            part = Ledger(entries=entries)
            cost, unpriced = self.costs(part)
            return {**part.total().model_dump(), "cost_usd": cost, "unpriced_calls": unpriced}

        def rows(name: str, key: Callable[[LedgerEntry], Any]) -> list[dict[str, Any]]:
            groups: dict[Any, list[LedgerEntry]] = {}
            for e in ledger.entries:
                groups.setdefault(key(e), []).append(e)
            return [{**(dict(zip(("provider", "model"), k, strict=True))
                        if name == "model" else {name: k}), **row(v)}
                    for k, v in groups.items()]

        total = row(ledger.entries)
        for counted in ("calls", "input_tokens", "output_tokens"):  # the totals have them
            del total[counted]
        return {**total,
                "by_model": rows("model", lambda e: (e.provider, e.model)),
                "by_round": rows("round", lambda e: e.round),
                "by_agent_class": rows("agent_class", lambda e: e.agent_class)}


_default: Prices | None = None
_default_lock = threading.Lock()


def prices() -> Prices:
    """The process's price table: the file ``AGENTPLEX_PRICES`` names (read once) over
    LiteLLM's, unless :func:`set_prices` gave another."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Prices(os.environ.get(PRICES_ENV) or None)
        return _default


def set_prices(table: Prices | str | Path | None) -> None:
    """Use ``table`` (or a price file's path over LiteLLM's table) from now on; ``None``:
    back to the default (``AGENTPLEX_PRICES``)."""
    global _default
    new = Prices(table) if isinstance(table, (str, Path)) else table
    with _default_lock:
        _default = new


def cost_totals(ledger: Ledger) -> dict[str, Any]:
    """:meth:`Prices.totals` by the process's table, for a manifest: a price file that
    cannot be read costs the run no manifest — LiteLLM's table prices it, and
    ``prices_error`` says what was wrong."""
    try:
        table = prices()
    except InvalidPrices as exc:
        return {**Prices().totals(ledger), "prices_error": str(exc)}
    return table.totals(ledger)
