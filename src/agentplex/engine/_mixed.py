"""Mixed steps: one forward pass that decodes a batch and prefills a chunk of a long prompt.

A decode step of a small batch reads every weight of the model for a few tokens; on a CPU
that read is most of its cost. Running a newcomer's prompt chunk in a pass of its own reads
the weights again, so the running requests' gap between tokens doubles whatever the chunk's
size. Here the batch's next tokens and the chunk's tokens go through the model as one packed
row: the layers' matrix products see them together (the weights are read once), and only
attention is split — the batch's rows attend to their rows of the paged cache, the chunk
to its own — the way vLLM and SGLang mix decodes and prefill chunks in a step.

The split is done by a cache object standing for both caches (its ``update`` appends each
part's new keys and values to its own cache) and by Transformers' registered SDPA attention
function, wrapped once: given a :class:`MixedStep` (a keyword argument that reaches every
attention layer) it attends twice, otherwise it is the function it wraps, so other passes
and other models are unchanged. The pass hands the model a ready 4-D mask, so the model
builds none. The paged cache's packed prefills and shared-prefix decode steps use the same
wrapper (:func:`install_attention`). Only models whose attention layers follow
Transformers' common pattern (``cache.update``, then the configured attention function;
every layer full attention; SDPA) take this path; others keep a pass per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MixedStep", "install_attention", "mixed_forward", "supports_mixed_steps"]

_KWARG = "agentplex_mixed_step"
_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def supports_mixed_steps(model: Any) -> bool:
    """Whether ``model`` can decode a batch and prefill a chunk in one pass."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in _MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "sliding_window", None) is not None:
        return False
    layer_types = getattr(config, "layer_types", None) or ()
    return all(kind == "full_attention" for kind in layer_types)


@dataclass
class MixedStep:
    """The two caches of one mixed pass, standing for the model's cache during it.

    ``rows`` decode rows (one new token each, their paged cache, ``rows`` rows masked by
    ``row_mask``), then the chunk's tokens (a cache of one row without padding)."""

    rows: int
    row_cache: Any
    chunk_cache: Any
    row_mask: Any
    """Boolean ``[rows, 1, 1, columns]``: which of the batch's cache columns each row sees."""
    chunk_mask: Any
    """Boolean ``[1, 1, chunk, past + chunk]``: causal, after the chunk's past."""
    _current: tuple[Any, Any, Any, Any] | None = field(default=None, repr=False)

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[None, None]:
        """Append the rows' and the chunk's new keys and values to their caches."""
        rows = self.rows
        row_keys = key_states[0, :, :rows].transpose(0, 1).unsqueeze(2)
        row_values = value_states[0, :, :rows].transpose(0, 1).unsqueeze(2)
        keys, values = self.row_cache.update(row_keys, row_values, layer_idx)
        chunk_keys, chunk_values = self.chunk_cache.update(
            key_states[:, :, rows:], value_states[:, :, rows:], layer_idx)
        self._current = (keys, values, chunk_keys, chunk_values)
        return None, None  # only ``attend`` uses them: any other attention fails loudly

    def attend(self, module: Any, query: Any, sdpa: Callable[..., Any],
               **kwargs: Any) -> tuple[Any, None]:
        """Attention of the packed ``query`` over the caches just updated, by ``sdpa``."""
        import torch

        if self._current is None:
            raise RuntimeError("a mixed step attended before its caches were updated")
        keys, values, chunk_keys, chunk_values = self._current
        self._current = None
        rows = self.rows
        row_query = query[0, :, :rows].transpose(0, 1).unsqueeze(2)
        row_out, _ = sdpa(module, row_query, keys, values, self.row_mask, **kwargs)
        chunk_out, _ = sdpa(module, query[:, :, rows:], chunk_keys, chunk_values,
                            self.chunk_mask, **kwargs)
        return torch.cat([row_out.transpose(0, 1), chunk_out], dim=1), None


_wrapper: Callable[..., Any] | None = None


def _install() -> None:
    """Wrap the registered SDPA attention function (again if something replaced it)."""
    global _wrapper
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if sdpa is _wrapper:
        return

    def mixed_or_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      **kwargs: Any) -> Any:
        step: Any = kwargs.pop(_KWARG, None)
        if step is None:  # any other pass, in any thread: unchanged
            return sdpa(module, query, key, value, attention_mask, **kwargs)
        return step.attend(module, query, sdpa, **kwargs)

    AttentionInterface.register("sdpa", mixed_or_sdpa)
    _wrapper = mixed_or_sdpa


def install_attention() -> str:
    """Wrap the registered SDPA attention function (once); the keyword argument that hands a
    pass's step object (with ``attend(module, query, sdpa, **kwargs)``) to every layer."""
    _install()
    return _KWARG


def mixed_forward(model: Any, ids: Any, positions: Any, step: MixedStep,
                  keep: Any, cache_kw: str = "past_key_values") -> Any:
    """Run ``model`` on the packed ``ids`` (``[1, rows + chunk]``) through ``step``'s
    caches; the logits at the positions ``keep``. ``cache_kw``: the forward pass's name
    for its cache (:func:`._compat.cache_keyword`)."""
    _install()
    out = model(input_ids=ids, attention_mask=step.chunk_mask, position_ids=positions,
                use_cache=True, logits_to_keep=keep, **{cache_kw: step, _KWARG: step})
    return out.logits
