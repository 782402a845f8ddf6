"""Quantized weights on the CPU: a loaded model's linear layers as weight-only int8 or int4.

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
1 output in 10,000).

``"int4"`` makes every linear layer ``Int4Linear`` (``_int4``: 4-bit weights, a scale and
zero per 32 input features, ATen's ``torch._weight_int4pack_mm_for_cpu`` up to
``INT4_ROWS`` rows, a bf16 matmul over the dequantized weights beyond) except the model's
output layer, which stays int8: with it in int4 too the embedded model's perplexity rose
8%, with it in int8 1%. A layer whose shape the int4 kernel does not take stays int8.
Measured on the embedded model (``docs/local-models.md``).
"""
from __future__ import annotations

import sys
from typing import Any

from .._errors import UnsupportedOptionError

__all__ = ["AUTO", "QUANTIZATIONS", "has_int4_kernel", "has_int8_kernel", "quantization_of",
           "quantize_model", "resolve_quantize"]

QUANTIZATIONS = ("int8", "int4")
"""The weight quantizations :func:`quantize_model` knows."""

AUTO = "auto"
"""``quantize="auto"``: for the embedded model on a CPU (float32 weights), ``"int4"`` where
torch has both kernels, else ``"int8"`` where it has the int8 one; the float weights for
everything else."""


def resolve_quantize(quantize: str | None, *, device: str, float32: bool = True,
                     model: str = "unknown", embedded: bool = False) -> str | None:
    """``quantize`` checked against where the model loads (``device``; ``float32``: whether
    its weights load as float32, which quantizing replaces); :data:`AUTO` resolved (``embedded``:
    whether the model is the embedded default)."""
    if quantize == AUTO:
        if not (embedded and device == "cpu" and float32):
            return None
        return "int4" if has_int4_kernel() else "int8" if has_int8_kernel() else None
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
    missing = _missing_kernel(quantize)
    if missing:
        raise UnsupportedOptionError(
            f"quantize={quantize!r} needs a weight-only kernel this torch build lacks "
            f"(torch.{missing})", provider="transformers", model=model)
    return quantize


def has_int8_kernel() -> bool:
    """Whether torch has ATen's weight-only int8 kernel (torch 2.3 and later)."""
    return _missing_kernel("int8") is None


def has_int4_kernel() -> bool:
    """Whether torch has the kernels ``quantize="int4"`` uses: ATen's weight-only int4
    kernel for the CPU, its weight packing, and the int8 kernel (for the output layer)."""
    return _missing_kernel("int4") is None


_KERNELS = {"int8": ("_weight_int8pack_mm",),
            "int4": ("_weight_int4pack_mm_for_cpu", "_convert_weight_to_int4pack_for_cpu",
                     "_weight_int8pack_mm")}


def _missing_kernel(quantize: str) -> str | None:
    """The first of the ATen functions ``quantize`` needs that torch lacks, else ``None``."""
    import torch

    return next((name for name in _KERNELS[quantize] if not hasattr(torch, name)), None)


def quantize_model(model: Any, quantize: str = "int8") -> int:
    """Replace ``model``'s float32 ``torch.nn.Linear`` layers in place by quantized ones;
    the number replaced. ``quantize`` is one of :data:`QUANTIZATIONS`: ``"int8"``, every
    layer ``Int8Linear`` (``_int8``); ``"int4"``, every layer ``Int4Linear`` (``_int4``)
    except the output layer (``model.get_output_embeddings()``) and any layer whose shape
    the int4 kernel does not take, which are ``Int8Linear``. The output layer rounds its
    input for FBGEMM's kernel at a few rows (``round_input``) in both."""
    import torch

    if quantize not in QUANTIZATIONS:
        raise UnsupportedOptionError(f"unknown quantize={quantize!r}", provider="transformers")
    from ._int4 import Int4Linear
    from ._int8 import Int8Linear

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
                int4 = quantize == "int4" and child is not output and Int4Linear.fits(child)
                setattr(module, name, Int4Linear(child) if int4 else Int8Linear(
                    child, round_input=child is output))
                replaced += 1
    config = getattr(model, "config", None)
    if config is not None:  # the output layer is no longer the embeddings: never tie them
        config.tie_word_embeddings = False
    return replaced


def quantization_of(model: Any) -> str | None:
    """``"int4"`` or ``"int8"``: what :func:`quantize_model` made ``model``'s linear
    layers (any ``Int4Linear``: ``"int4"``), else ``None``."""
    if not hasattr(model, "modules"):
        return None
    for scheme in ("int4", "int8"):
        module = sys.modules.get(f"{__package__}._{scheme}")  # never imported: not used
        layer = getattr(module, f"{scheme.capitalize()}Linear", None)
        if layer is not None and any(isinstance(m, layer) for m in model.modules()):
            return scheme
    return None
