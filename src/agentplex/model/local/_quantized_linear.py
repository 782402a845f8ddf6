"""What the weight-only linear layers (``Int8Linear``, ``Int4Linear``) share (imports torch):
a row count up to which a call goes to the class's quantized kernel, a dense copy of the
weights that more rows multiply instead, the bias, and :meth:`QuantizedLinear.concat`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar, Self, cast

import torch

__all__ = ["QuantizedLinear", "dense_dtype", "stack_rows", "tensors"]


@functools.cache
def dense_dtype() -> torch.dtype:
    """bf16 where oneDNN multiplies it natively on this CPU, float32 elsewhere."""
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.bfloat16 if native is not None and bool(native()) else torch.float32


def tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s buffers by name, read without ``Module.__getattr__`` (a decode step
    reads each quantized layer's several times: ~120 layer calls a step on the embedded
    model). Only for buffers that are never ``None``."""
    return cast("dict[str, torch.Tensor]", module._buffers)


class QuantizedLinear(torch.nn.Module):
    """``linear`` over quantized weights: up to :attr:`kernel_rows` rows a call goes to the
    subclass's kernel (:meth:`_kernel`), more to a matmul over ``dense`` (bf16 where the CPU
    multiplies it natively, else float32; either way the sums are rounded to bf16 as the
    kernels' are) and :meth:`_finish`; then the bias, in float32. The input and output keep
    their dtype and any leading shape."""

    kernel_rows: int
    """Most rows a call multiplies with the quantized kernel (a class's default; a layer
    whose shape its kernel does not take sets 0)."""
    kind: ClassVar[str]
    """The quantization's name (``"int8"``, ``"int4"``), for ``repr``."""

    dense: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        """The output (before the bias) of ``rows`` (``[at most kernel_rows, in_features]``,
        the input's dtype), each computed from that row alone."""
        raise NotImplementedError

    def _finish(self, sums: torch.Tensor) -> torch.Tensor:
        """The dense matmul's bf16 sums made into the output (before the bias)."""
        return sums

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compute(x.reshape(-1, self.in_features))
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def compute(self, rows: torch.Tensor) -> torch.Tensor:
        """The output of ``rows`` (``[rows, in_features]``) in the dtype its path computes
        it (bf16 or float32): :meth:`forward` returns it in the input's dtype. A caller that
        goes on in float32 (or multiplies it by the next layer) saves the copy."""
        if rows.shape[0] <= self.kernel_rows:
            out = self._kernel(rows)
        else:
            rows, dense = rows.to(torch.bfloat16), self.dense
            if dense.dtype == torch.bfloat16:
                sums = torch.nn.functional.linear(rows, dense)
            else:  # rounded to bf16 as the kernels' sums are
                sums = torch.nn.functional.linear(rows.float(), dense).to(torch.bfloat16)
            out = self._finish(sums)
        bias = self._buffers["bias"]  # not Module.__getattr__ (see tensors)
        if bias is not None:
            out = out + bias
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"

    @classmethod
    def concat(cls, layers: Sequence[Self]) -> Self:
        """One layer whose output is the concatenation of ``layers``' outputs (the same
        class and ``in_features``; weights stacked along the output features). Each given
        layer's large buffers become views of the fused layer's, so the weights are held
        once (where the layout allows: see the subclass)."""
        if not layers or any(type(layer) is not cls for layer in layers):
            raise TypeError(f"{cls.__name__}.concat takes one or more {cls.__name__} layers")
        if len({layer.in_features for layer in layers}) != 1:
            raise ValueError(f"{cls.__name__}.concat: the layers' in_features differ")
        fused = cls.__new__(cls)
        torch.nn.Module.__init__(fused)
        fused.in_features = layers[0].in_features
        fused.out_features = sum(layer.out_features for layer in layers)
        fused.register_buffer("dense", stack_rows(layers, "dense"))
        biases = [layer.bias for layer in layers]
        if all(b is None for b in biases):
            fused.register_buffer("bias", None)
        elif all(b is not None for b in biases):
            fused.register_buffer("bias", stack_rows(layers, "bias"))
        else:  # a layer without bias adds zeros
            dtype = next(b.dtype for b in biases if b is not None)
            fused.register_buffer("bias", torch.cat([
                b if b is not None else torch.zeros(layer.out_features, dtype=dtype)
                for b, layer in zip(biases, layers, strict=True)]))
        fused._concat_own(layers)
        return fused

    def _concat_own(self, layers: Sequence[Self]) -> None:
        """Set the subclass's own buffers of ``self``, the fused layer, from ``layers``."""
        raise NotImplementedError


def stack_rows(layers: Sequence[torch.nn.Module], name: str) -> torch.Tensor:
    """The buffers ``name`` of ``layers`` concatenated along their first dimension; each
    layer's buffer becomes a view of its rows."""
    parts: list[torch.Tensor] = [getattr(layer, name) for layer in layers]
    whole = torch.cat(parts)
    start = 0
    for layer, part in zip(layers, parts, strict=True):
        setattr(layer, name, whole[start:start + part.shape[0]])
        start += part.shape[0]
    return whole

