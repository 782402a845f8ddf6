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

import functools

import torch

__all__ = ["INT8_ROWS", "Int8Linear"]

INT8_ROWS = 4
"""Most rows a call multiplies with the int8 kernel; more go to the dequantized matmul (on
the embedded model's 576 x 1536 layer, one thread: the int8 kernel 44 / 83 / 167 us at 1 /
4 / 8 rows, the bf16 matmul 115 / 118 / 122)."""


@functools.cache
def dense_dtype() -> torch.dtype:
    """bf16 where oneDNN multiplies it natively on this CPU, float32 elsewhere."""
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.bfloat16 if native is not None and bool(native()) else torch.float32


class Int8Linear(torch.nn.Module):
    """``linear`` with int8 weights, one symmetric scale per output channel (float32); the
    input and output keep their dtype (the input and the kernels' sums are rounded to bf16
    on the way)."""

    qweight: torch.Tensor
    ones: torch.Tensor
    scales: torch.Tensor
    dense: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            weight = linear.weight.detach().float()
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-30)
            ints = torch.round(weight / scales[:, None]).clamp(-127, 127)
            self.register_buffer("qweight", ints.to(torch.int8).contiguous())
            self.register_buffer("ones", torch.ones(self.out_features, dtype=torch.bfloat16))
            self.register_buffer("scales", scales)
            self.register_buffer("dense", ints.to(dense_dtype()))
            bias = linear.bias.detach().clone() if linear.bias is not None else None
            self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if rows.shape[0] <= INT8_ROWS:
            sums = torch._weight_int8pack_mm(rows, self.qweight, self.ones)
        elif self.dense.dtype == torch.bfloat16:
            sums = torch.nn.functional.linear(rows, self.dense)
        else:  # rounded to bf16 as the other kernels' sums are
            sums = torch.nn.functional.linear(rows.float(), self.dense).to(torch.bfloat16)
        out = torch.mul(sums, self.scales)  # float32
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"
