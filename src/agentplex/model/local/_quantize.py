"""Quantized weights on the CPU: a loaded model's linear layers as int8.

``"int8"`` replaces the ``torch.nn.Linear`` layers of a model (the output layer too) by
torch's dynamic int8 linear (FBGEMM's kernels, through ``torch.ao.nn.quantized.dynamic``):
weights stored as int8 with one scale per output channel, the input quantized to 8 bits on
each call with one scale for the whole input. Layers whose input has outlier channels stay
float32: the MLP's output projections (``down_proj`` in Llama, Mistral and Qwen models),
which alone took the embedded model's perplexity from 9.6 to 38.8 when quantized. The
embeddings stay float32.

Measured on the embedded model (``docs/local-models.md``), and why this library:
torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` and ``Int8WeightOnlyConfig`` run
slower than float32 on a CPU without ``torch.compile`` (an engine whose batch changes shape
every step), and ``torch._weight_int8pack_mm`` slower still; FBGEMM's int8 linear is 4x a
float32 one at one row. torch marks its quantized-tensor API deprecated; the project pins
torch 2.13, where it works.

One input scale per call means a row's output can depend on the rows batched with it (as
with bf16 weights): greedy output is deterministic for the same batch, not across batches.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Any

from .._errors import UnsupportedOptionError

__all__ = ["FLOAT_LAYERS", "QUANTIZATIONS", "quantization_of", "quantize_model",
           "resolve_quantize"]

QUANTIZATIONS = ("int8",)
"""The weight quantizations :func:`quantize_model` knows."""

FLOAT_LAYERS = frozenset({"down_proj"})
"""Names of linear layers that ``"int8"`` keeps in float32 (their input has outliers)."""


def resolve_quantize(quantize: str | None, *, device: str, float32: bool = True,
                     model: str = "unknown") -> str | None:
    """``quantize`` checked against where the model loads (``device``; ``float32``: whether
    its weights load as float32, which int8 replaces)."""
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise UnsupportedOptionError(
            f"unknown quantize={quantize!r}: give one of {', '.join(QUANTIZATIONS)} or None",
            provider="transformers", model=model)
    if device != "cpu":
        raise UnsupportedOptionError(
            f"quantize={quantize!r} runs on the CPU only (the model is on {device})",
            provider="transformers", model=model)
    if not float32:
        raise UnsupportedOptionError(
            f"quantize={quantize!r} replaces float32 weights: leave torch_dtype unset",
            provider="transformers", model=model)
    if not _has_int8_kernels():
        raise UnsupportedOptionError(
            "this torch build has no FBGEMM int8 kernels (x86-64 CPU builds have them)",
            provider="transformers", model=model)
    return quantize


def _has_int8_kernels() -> bool:
    import torch

    return "fbgemm" in torch.backends.quantized.supported_engines


@functools.cache
def _full_range() -> bool:
    """Whether the CPU multiplies 8-bit numbers into 32-bit sums (VNNI): FBGEMM's inputs
    may then use all 8 bits; without it, 7 (a pair of products could saturate 16 bits)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not sys.platform.startswith("linux") or not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text(errors="replace").split()
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_model(model: Any, quantize: str = "int8") -> int:
    """Replace ``model``'s float32 ``torch.nn.Linear`` layers in place by int8 ones, except
    those named in :data:`FLOAT_LAYERS`; the number replaced. ``quantize`` is one of
    :data:`QUANTIZATIONS`."""
    import torch

    if quantize not in QUANTIZATIONS:
        raise UnsupportedOptionError(f"unknown quantize={quantize!r}", provider="transformers")
    torch.backends.quantized.engine = "fbgemm"
    layer = _int8_class()
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if (type(child) is torch.nn.Linear and child.weight.dtype == torch.float32
                    and name not in FLOAT_LAYERS):
                setattr(module, name, _int8_linear(child, layer))
                replaced += 1
    config = getattr(model, "config", None)
    if config is not None:  # the output layer is no longer the embeddings: never tie them
        config.tie_word_embeddings = False
    return replaced


def quantization_of(model: Any) -> str | None:
    """``"int8"`` when :func:`quantize_model` made ``model``'s linear layers int8, else
    ``None``."""
    if "torch" not in sys.modules or not hasattr(model, "modules"):
        return None
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return "int8" if any(isinstance(m, DynamicLinear) for m in model.modules()) else None


@functools.cache
def _int8_class() -> Any:
    """torch's dynamic int8 linear, its input quantized to all 8 bits where the CPU allows."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    full = _full_range()

    class Int8Linear(DynamicLinear):
        """A linear layer with int8 weights (FBGEMM)."""

        def forward(self, x: Any) -> Any:
            packed = self._packed_params._packed_params
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=not full)

    return Int8Linear


def _int8_linear(linear: Any, layer: Any) -> Any:
    """``linear`` as ``layer`` (an int8 linear): symmetric int8 weights, a scale per row."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13 warns that its quantized tensors will go; the pinned version has them
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        weight = linear.weight.detach()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        zeros = torch.zeros(weight.shape[0], dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scales, zeros, axis=0, dtype=torch.qint8)
        out = layer(linear.in_features, linear.out_features,
                    bias_=linear.bias is not None, dtype=torch.qint8)
        bias = linear.bias.detach() if linear.bias is not None else None
        out.set_weight_bias(qweight, bias)
    return out
