"""The weight-only int4 linear layer that ``quantize="int4"`` puts in a model (imports torch).

Weights in groups of :data:`GROUP` along the input features, asymmetric: per group a bf16
scale ``(max - min) / 15`` and zero ``min + 8 * scale``, the weight ``(q - 8) * scale + zero``
with ``q`` in 0..15. Up to :data:`INT4_ROWS` rows, ``torch._weight_int4pack_mm_for_cpu``
(ATen's weight-only int4 kernel, the one torchao's ``Int4CPULayout`` calls) reads the packed
4-bit weights, an eighth of float32's bytes; it computes each row from that row alone (the
same bits whatever rows share the call). More rows go to a matmul over the dequantized
weights held as bf16 where the CPU multiplies bf16 natively (oneDNN; AMX where present),
else as float32. The kernel dequantizes in float32, which bf16 cannot hold exactly: the two
paths differ by one bf16 step in many outputs (with float32's dense copy, in about 1 in
10,000, as int8's do).

The kernel needs the input features to be a multiple of :data:`GROUP` and the output
features a multiple of 16 (:meth:`Int4Linear.fits`); ``quantize_model`` keeps any other
layer int8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._errors import UnsupportedOptionError
from ._quantized_linear import QuantizedLinear, dense_dtype, stack_rows, tensors

__all__ = ["GROUP", "INT4_ROWS", "Int4Linear"]

GROUP = 32
"""Input features per scale and zero (group size 64 lost too much quality on the embedded
model: perplexity 25.4 against float32's 9.58)."""

INT4_ROWS = 8
"""Most rows a call multiplies with the int4 kernel; more go to the dequantized matmul. The
kernel's time grows with the rows, the matmul's barely, but the matmul reads four times the
bytes, and across a model's layers neither finds its weights in the caches: on the
embedded model's layers, one thread, weights cold, the int4 kernel takes 110 / 382 / 183 us
at 8 rows (q/k/v, gate/up, down) against the bf16 matmul's 185 / 561 / 222, and 164 / 555 /
265 at 12 rows against 187 / 570 / 216. (With the weights in the caches the matmul wins from
5 rows on: 576 x 1536, 121 against 120 us.)"""

_PACK_ROWS = 64
"""Output features per block of the packed layout: a layer whose rows are a multiple of it
packs to whole blocks, which :meth:`Int4Linear.concat` can stack and slice."""


class Int4Linear(QuantizedLinear):
    """``linear`` with 4-bit weights, a bf16 scale and zero per :data:`GROUP` input features;
    the input and output keep their dtype (the input and the kernels' sums are rounded to
    bf16 on the way). :meth:`concat` re-points the given layers' dense weights and, where each
    has a multiple of 64 output features, their packed weights to the fused layer's rows."""

    kernel_rows = INT4_ROWS
    kind = "int4"

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    @staticmethod
    def fits(linear: torch.nn.Linear) -> bool:
        """Whether the int4 kernel takes ``linear``'s shape."""
        return linear.in_features % GROUP == 0 and linear.out_features % 16 == 0

    def __init__(self, linear: torch.nn.Linear) -> None:
        if not self.fits(linear):
            raise UnsupportedOptionError(
                f"int4 needs in_features a multiple of {GROUP} and out_features a multiple "
                f"of 16, not {linear.in_features} -> {linear.out_features}",
                provider="transformers")
        super().__init__(linear)
        with torch.no_grad():
            weight = linear.weight.detach().float()
            groups = weight.view(self.out_features, -1, GROUP)
            low, high = groups.amin(dim=-1), groups.amax(dim=-1)
            scales = ((high - low) / 15).clamp(min=1e-30)
            ints = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15)
            # what the kernel reads: bf16 scales and zeros, dequantized in float32
            zeros = (low + 8 * scales).to(torch.bfloat16).float()
            scales = scales.to(torch.bfloat16).float()
            dequantized = (ints - 8) * scales[..., None] + zeros[..., None]
            self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(
                ints.view(self.out_features, -1).to(torch.int32), 1))
            self.register_buffer("scales_and_zeros", torch.stack(
                [scales, zeros], dim=-1).transpose(0, 1).to(torch.bfloat16).contiguous())
            self.register_buffer("dense", dequantized.view(self.out_features, -1)
                                 .to(dense_dtype()))

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        buffers = tensors(self)
        return torch._weight_int4pack_mm_for_cpu(rows.to(torch.bfloat16), buffers["packed"],
                                                 GROUP, buffers["scales_and_zeros"])

    def _concat_own(self, layers: Sequence[Int4Linear]) -> None:
        self.register_buffer("scales_and_zeros", torch.cat(  # small: each keeps its own
            [layer.scales_and_zeros for layer in layers], dim=1))
        if all(layer.out_features % _PACK_ROWS == 0 for layer in layers):
            self.register_buffer("packed", stack_rows(layers, "packed"))
        else:  # blocks would straddle two layers' rows: pack again, each keeps its own
            ints = torch.cat([layer._unpacked() for layer in layers])
            self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(ints, 1))

    def _unpacked(self) -> torch.Tensor:
        """The 4-bit integers (``[out_features, in_features]``, int32), read back through
        the kernel itself (an identity input, scale 1, zero 8: exact in bf16)."""
        groups = self.in_features // GROUP
        unit = torch.tensor([1.0, 8.0], dtype=torch.bfloat16).expand(
            groups, self.out_features, 2).contiguous()
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        out = torch._weight_int4pack_mm_for_cpu(eye, self.packed, GROUP, unit)
        return out.t().to(torch.int32).contiguous()
