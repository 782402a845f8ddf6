"""Generation arguments in one vocabulary: :class:`GenerationOptions`.

Every chat model takes the same names — at construction, in ``init_chat_model`` and per
call — and each provider maps them to its own name and place (Anthropic's
``stop_sequences``, Gemini's ``max_output_tokens``, Ollama's ``options`` ...). The names
other libraries use for the same thing are accepted as aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._errors import InvalidRequestError

__all__ = ["ALIASES", "GenerationOptions", "normalize_options", "split_options"]

ALIASES: dict[str, str] = {
    "stop_sequences": "stop",  # smolagents, Anthropic, Gemini
    "max_new_tokens": "max_tokens",  # Transformers, smolagents
    "max_output_tokens": "max_tokens",  # Gemini
    "max_completion_tokens": "max_tokens",  # OpenAI's newer name
    "num_predict": "max_tokens",  # Ollama
}
"""Other libraries' names for our generation arguments."""


class GenerationOptions(BaseModel):
    """The generation arguments every provider understands (each may be left unset).

    A provider that cannot honour a given argument raises
    :class:`~agentplex.model.UnsupportedOptionError` naming it, before anything is sent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    """The answer's token budget."""
    stop: list[str] | None = None
    """Stop sequences (a single string is accepted)."""
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def given(self) -> dict[str, Any]:
        """The arguments that were set, by name."""
        return self.model_dump(exclude_none=True)


NAMES = frozenset(GenerationOptions.model_fields)


def normalize_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with aliases renamed to our names; arguments that are no generation
    argument are kept as they are. Our name wins over an alias given beside it; two
    aliases of one name (and no name) are an error."""
    out = {k: v for k, v in kwargs.items() if k not in ALIASES}
    seen: dict[str, str] = {}
    for key, value in kwargs.items():
        name = ALIASES.get(key)
        if name is None or name in kwargs:
            continue
        if name in seen:
            raise InvalidRequestError(
                f"{seen[name]!r} and {key!r} both given; they mean the same ({name!r})")
        seen[name] = key
        out[name] = value
    return out


def split_options(
    kwargs: Mapping[str, Any], *, provider: str = "unknown", model: str = "unknown"
) -> tuple[GenerationOptions, dict[str, Any]]:
    """Split normalised ``kwargs`` into validated generation arguments and the rest.

    A ``None`` value leaves the argument unset (so a per-call ``temperature=None`` falls
    back to nothing, not to an error).
    """
    given = {k: v for k, v in kwargs.items() if k in NAMES and v is not None}
    rest = {k: v for k, v in kwargs.items() if k not in NAMES}
    try:
        options = GenerationOptions(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise InvalidRequestError(f"invalid generation arguments: {problems}",
                                  provider=provider, model=model) from exc
    return options, rest
