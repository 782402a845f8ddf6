"""The weight-only int8 linear layer that ``quantize="int8"`` puts in a model (imports torch).

Up to :data:`INT8_ROWS` rows, ``torch._weight_int8pack_mm`` (ATen's weight-only int8 kernel)
reads the int8 weights; more rows go to a matmul over the same integers held as bf16 (exact),
where the CPU multiplies bf16 natively (oneDNN; AMX where present), else as float32. Both
compute each row from that row alone, and they agree: each rounds its float32 sum of
``input x integer weight`` to bf16 once, and the per-channel scale is applied afterwards in
float32, the same way for both. They differ only where their float32 sums (added in
different orders) straddle a bf16 rounding boundary: about 1 output in 10,000, by one bf16
step — as float32's own matrix-vector and matrix-matrix kernels differ in the last bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._quantized_linear import QuantizedLinear, dense_dtype, stack_rows

__all__ = ["INT8_ROWS", "Int8Linear", "dense_dtype"]

INT8_ROWS = 4
"""Most rows a call multiplies with the int8 kernel; more go to the dequantized matmul (on
the embedded model's 576 x 1536 layer, one thread: the int8 kernel 44 / 83 / 167 us at 1 /
4 / 8 rows, the bf16 matmul 115 / 118 / 122)."""


class Int8Linear(QuantizedLinear):
    """``linear`` with int8 weights, one symmetric scale per output channel (float32); the
    input and output keep their dtype (the input and the kernels' sums are rounded to bf16
    on the way). :meth:`concat` re-points every buffer of the given layers to the fused
    layer's rows. The int8 kernel needs the input features to be a multiple of 16 (with
    others, torch 2.13's crashes or returns garbage): any other layer multiplies every call
    by the dense copy."""

    kernel_rows = INT8_ROWS
    kind = "int8"

    qweight: torch.Tensor
    ones: torch.Tensor
    scales: torch.Tensor

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__(linear)
        self.kernel_rows = _kernel_rows(self.in_features)
        with torch.no_grad():
            weight = linear.weight.detach().float()
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-30)
            ints = torch.round(weight / scales[:, None]).clamp(-127, 127)
            self.register_buffer("qweight", ints.to(torch.int8).contiguous())
            self.register_buffer("ones", torch.ones(self.out_features, dtype=torch.bfloat16))
            self.register_buffer("scales", scales)
            self.register_buffer("dense", ints.to(dense_dtype()))

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(rows, self.qweight, self.ones)

    def _finish(self, sums: torch.Tensor) -> torch.Tensor:
        return torch.mul(sums, self.scales)  # float32

    def _concat_own(self, layers: Sequence[Int8Linear]) -> None:
        self.kernel_rows = _kernel_rows(self.in_features)
        for name in ("qweight", "ones", "scales"):
            self.register_buffer(name, stack_rows(layers, name))


def _kernel_rows(in_features: int) -> int:
    """:data:`INT8_ROWS` where the int8 kernel takes ``in_features``, else 0."""
    return INT8_ROWS if in_features % 16 == 0 else 0
