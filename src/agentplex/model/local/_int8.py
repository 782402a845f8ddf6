"""The weight-only int8 linear layer that ``quantize="int8"`` puts in a model (imports torch).

Up to :data:`INT8_ROWS` rows (an agent decoding, a few together),
``torch._weight_int8pack_mm`` (ATen's weight-only int8 kernel, bf16 input) reads the int8
weights; more rows go to a matmul over the same integers held as bf16 (exact), where the
CPU multiplies bf16 natively (oneDNN; AMX where present), else as float32. Both compute
each row from that row alone, and they agree: each rounds its float32 sum of
``input x integer weight`` to bf16 once, and the per-channel scale is applied afterwards in
float32, the same way for both. They differ only where their float32 sums (added in
different orders) straddle a bf16 rounding boundary: about 1 output in 10,000, by one bf16
step — as float32's own matrix-vector and matrix-matrix kernels differ in the last bit.

A layer made with ``round_input=True`` (what :func:`quantize_model` does for a model's
output layer) sends those rows instead, where torch has FBGEMM (x86 builds), to FBGEMM's
dynamic int8 kernel (``torch.ops.quantized.linear_dynamic``) one row a call: the row is
rounded to 7-bit integers with a scale of its own and multiplied as integers, as llama.cpp
multiplies its ``Q8_0`` weights by 8-bit activations. On the embedded model's output layer
(49152 x 576), one thread, weights cold, it takes 2.2 ms a row where ATen's kernel takes 4.6
(2 rows: 4.4 against 5.1; 4 rows: 7.4 against 6.2), reading the same bytes, and costs no
quality measurable (perplexity decoding one token a step on the fixed text's first 300
tokens: 14.40 against 14.44). Not inside a model: a layer's input there has a few channels
far larger than the rest, which a 7-bit scale for the row crushes (every layer of the
embedded model so: 16.6 against 14.4).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch

from ._quantized_linear import QuantizedLinear, dense_dtype, stack_rows, tensors

__all__ = ["INT8_ROWS", "Int8Linear", "dense_dtype", "has_fbgemm"]

INT8_ROWS = 4
"""Most rows a call multiplies with an int8 kernel; more go to the dequantized matmul. One
thread, weights cold, on the embedded model's 576 x 3072 gate/up layer: FBGEMM one row a
call 220 / 320 / 512 us at 1 / 2 / 4 rows, ATen's kernel 327 / 350 / 408, the bf16 matmul
about 500; with the weights in the caches (576 x 1536), ATen's kernel 44 / 83 / 167 us at
1 / 4 / 8 rows, the bf16 matmul 115 / 118 / 122."""


class Int8Linear(QuantizedLinear):
    """``linear`` with int8 weights, one symmetric scale per output channel (float32); the
    input and output keep their dtype (see the module's docstring for how each path rounds
    on the way; ``round_input``: FBGEMM's kernel for a few rows, an output layer's choice).
    :meth:`concat` re-points every buffer of the given layers to the fused layer's rows.
    ATen's int8 kernel needs the input features to be a multiple of 16 (with others, torch
    2.13's crashes or returns garbage): any other layer not rounding its input multiplies
    every call by the dense copy."""

    kernel_rows = INT8_ROWS
    kind = "int8"

    qweight: torch.Tensor
    ones: torch.Tensor
    scales: torch.Tensor

    def __init__(self, linear: torch.nn.Linear, *, round_input: bool = False) -> None:
        super().__init__(linear)
        self.round_input = round_input and has_fbgemm()
        """Whether up to :data:`INT8_ROWS` rows go to FBGEMM, one a call, their input
        rounded to 7 bits (see the module's docstring)."""
        self.kernel_rows = _kernel_rows(self.in_features, self.round_input)
        with torch.no_grad():
            weight = linear.weight.detach().float()
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-30)
            ints = torch.round(weight / scales[:, None]).clamp(-127, 127)
            self.register_buffer("qweight", ints.to(torch.int8).contiguous())
            self.register_buffer("ones", torch.ones(self.out_features, dtype=torch.bfloat16))
            self.register_buffer("scales", scales)
            self.register_buffer("dense", ints.to(dense_dtype()))

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.round_input:
            buffers = tensors(self)
            sums = torch._weight_int8pack_mm(rows.to(torch.bfloat16), buffers["qweight"],
                                             buffers["ones"])
            return self._finish(sums)
        packed = self.__dict__.get("_fbgemm")
        if packed is None:  # packed on first use: a layer only ever called fused never is
            with warnings.catch_warnings():  # quantized tensors: deprecated, see has_fbgemm
                warnings.simplefilter("ignore", UserWarning)
                weights = torch._make_per_channel_quantized_tensor(
                    self.qweight, self.scales.double(),
                    torch.zeros(self.out_features, dtype=torch.long), 0)
            packed = self.__dict__["_fbgemm"] = torch.ops.quantized.linear_prepack(
                weights, None)
        rows = rows.float()
        # one row a call: each row's input scale its own. reduce_range: 7-bit inputs, which
        # CPUs without VNNI add without overflowing
        outs = [torch.ops.quantized.linear_dynamic(rows[i:i + 1], packed, True)
                for i in range(rows.shape[0])]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _finish(self, sums: torch.Tensor) -> torch.Tensor:
        return torch.mul(sums, tensors(self)["scales"])  # float32

    def _concat_own(self, layers: Sequence[Int8Linear]) -> None:
        if len({layer.round_input for layer in layers}) > 1:
            raise ValueError("Int8Linear.concat: the layers round their input differently")
        self.round_input = layers[0].round_input
        self.kernel_rows = _kernel_rows(self.in_features, self.round_input)
        for name in ("qweight", "ones", "scales"):
            self.register_buffer(name, stack_rows(layers, name))


@functools.cache
def has_fbgemm() -> bool:
    """Whether this torch build has FBGEMM's dynamic int8 linear kernel (x86 builds). torch
    2.13 marks the quantized tensors it packs from as deprecated: where a later torch drops
    them, a row alone goes to ATen's weight-only kernel, as on other CPUs."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    try:
        return all(callable(getattr(torch.ops.quantized, name)) for name in
                   ("linear_prepack", "linear_dynamic")) and callable(
                       torch._make_per_channel_quantized_tensor)
    except (AttributeError, RuntimeError):
        return False


def _kernel_rows(in_features: int, fbgemm: bool) -> int:
    """:data:`INT8_ROWS` where the layer's kernel takes ``in_features`` (FBGEMM's any,
    ATen's a multiple of 16), else 0."""
    return INT8_ROWS if fbgemm or in_features % 16 == 0 else 0
