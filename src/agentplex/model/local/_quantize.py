"""Quantized weights on the CPU: a loaded model's linear layers as weight-only int8.

``"int8"`` replaces every ``torch.nn.Linear`` of a model (the output layer too) by
``Int8Linear`` (``_int8``): int8 weights with one symmetric scale per output channel.
Activations stay floating point (rounded to bf16 on their way into the kernel), so no row of
a batch depends on another row's values, as it did with an input scale per batch. Two
maintained ATen kernels do the work: up to ``INT8_ROWS`` rows (one agent decoding, a few
together) ``torch._weight_int8pack_mm`` — ATen's weight-only int8 kernel, the one gpt-fast and
torchao use on CPUs — reads the int8 weights, a quarter of float32's bytes; from there on a
bf16 matmul (oneDNN, AMX where present) over the same integers held as bf16,
because at many rows the multiplications, not the bytes read, decide the time.

Each kernel computes a row from that row alone, and the two agree: both round one float32
sum of input x integer weight to bf16 and apply the scales afterwards alike; they differ
only where their sums, added in different orders, straddle a bf16 rounding boundary (about
1 output in 10,000). Measured on the embedded model
(``docs/local-models.md``).
"""

from __future__ import annotations

import sys
from typing import Any

from .._errors import UnsupportedOptionError

__all__ = ["AUTO", "QUANTIZATIONS", "has_int8_kernel", "quantization_of", "quantize_model",
           "resolve_quantize"]

QUANTIZATIONS = ("int8",)
"""The weight quantizations :func:`quantize_model` knows."""

AUTO = "auto"
"""``quantize="auto"``: ``"int8"`` for the embedded model on a CPU (float32 weights, a torch
with the kernel), the float weights for everything else."""


def resolve_quantize(quantize: str | None, *, device: str, float32: bool = True,
                     model: str = "unknown", embedded: bool = False) -> str | None:
    """``quantize`` checked against where the model loads (``device``; ``float32``: whether
    its weights load as float32, which int8 replaces); :data:`AUTO` resolved (``embedded``:
    whether the model is the embedded default)."""
    if quantize == AUTO:
        usable = device == "cpu" and float32 and has_int8_kernel()
        return "int8" if embedded and usable else None
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise UnsupportedOptionError(
            f"unknown quantize={quantize!r}: give one of {', '.join(QUANTIZATIONS)}, "
            f"{AUTO!r} or None",
            provider="transformers", model=model)
    if device != "cpu":
        raise UnsupportedOptionError(
            f"quantize={quantize!r} runs on the CPU only (the model is on {device})",
            provider="transformers", model=model)
    if not float32:
        raise UnsupportedOptionError(
            f"quantize={quantize!r} replaces float32 weights: leave torch_dtype unset",
            provider="transformers", model=model)
    if not has_int8_kernel():
        raise UnsupportedOptionError(
            "this torch build has no weight-only int8 kernel (torch._weight_int8pack_mm)",
            provider="transformers", model=model)
    return quantize


def has_int8_kernel() -> bool:
    """Whether torch has ATen's weight-only int8 kernel (torch 2.3 and later)."""
    import torch

    return hasattr(torch, "_weight_int8pack_mm")


def quantize_model(model: Any, quantize: str = "int8") -> int:
    """Replace ``model``'s float32 ``torch.nn.Linear`` layers in place by
    ``Int8Linear`` ones (``_int8``); the number replaced. ``quantize`` is one of
    :data:`QUANTIZATIONS`."""
    import torch

    if quantize not in QUANTIZATIONS:
        raise UnsupportedOptionError(f"unknown quantize={quantize!r}", provider="transformers")
    from ._int8 import Int8Linear

    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
                setattr(module, name, Int8Linear(child))
                replaced += 1
    config = getattr(model, "config", None)
    if config is not None:  # the output layer is no longer the embeddings: never tie them
        config.tie_word_embeddings = False
    return replaced


def quantization_of(model: Any) -> str | None:
    """``"int8"`` when :func:`quantize_model` made ``model``'s linear layers int8, else
    ``None``."""
    int8 = sys.modules.get(f"{__package__}._int8")  # never imported: nothing quantized
    if int8 is None or not hasattr(model, "modules"):
        return None
    return "int8" if any(isinstance(m, int8.Int8Linear) for m in model.modules()) else None
