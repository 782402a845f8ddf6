"""Decode steps of Llama-family models straight over their weights, not through their modules.

At one agent on a CPU, a decode step of the embedded model (30 layers) spent about as long in
Transformers' module calls as in reading the weights: decorators, keyword handling, output
objects and ~90 small operators a layer, each dispatched from Python. :class:`DirectDecode`
runs the same arithmetic over the same weights, operator for operator where the layers are
the model's own (the logits are bitwise the model's forward's, but over a cache of a
narrower dtype than the activations, a quantized model's bf16 cache, which it attends to in
that dtype where the forward attends in the activations'), with fewer calls: no
module machinery, the rotary angles once a step, and where the layers can be concatenated
(the quantized layers' ``concat``: their outputs per output channel do not depend on what
else the layer computes) one call for q/k/v and one for gate/up.

Only decode steps (one new token a row) of models whose layers follow Llama's pattern take
this path (:func:`direct_decode`): ``llama``, ``mistral`` and ``qwen2`` configurations, SDPA
attention, every layer full attention, SiLU MLPs, rotary angles fixed at load
(``default``, ``linear``, ``llama3``). Everything else, and every prefill, goes through the
model's ``forward``.
"""

from __future__ import annotations

import weakref
from typing import Any

from ._mixed import supports_mixed_steps
from ._paged import PagedStep

__all__ = ["DirectDecode", "direct_decode"]

_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
"""Of the models whose chunks ride in decode passes (``._mixed``), those whose layers this
module computes (not ``qwen3``: its q and k norms)."""
_ROPE_TYPES = frozenset({"default", "linear", "llama3"})


def direct_decode(model: Any) -> DirectDecode | None:
    """A :class:`DirectDecode` for ``model``, or ``None`` where its layers are not of the
    kind it computes (the model's ``forward`` then decodes)."""
    if not supports_mixed_steps(model):  # Llama's layer pattern, SDPA, full attention
        return None
    config = model.config
    if config.model_type not in _MODEL_TYPES or getattr(config, "hidden_act", None) != "silu":
        return None
    rope = (getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
            or {})
    if rope.get("rope_type", rope.get("type", "default")) not in _ROPE_TYPES:
        return None
    try:
        return DirectDecode(model)
    except (AttributeError, TypeError):  # not laid out as Llama's modules are
        return None


class _Layer:
    """One decoder layer's weights, as the step uses them."""

    def __init__(self, layer: Any) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.attn = attn
        self.norms = ((layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                      (layer.post_attention_layernorm.weight,
                       layer.post_attention_layernorm.variance_epsilon))
        qkv, gate_up = (_fused([attn.q_proj, attn.k_proj, attn.v_proj]),
                        _fused([mlp.gate_proj, mlp.up_proj]))
        linears = (qkv, attn.o_proj, gate_up, mlp.down_proj)
        self.quantized = all(callable(getattr(m, "compute", None)) for m in linears)
        """Whether the layers are quantized ones, whose ``compute`` (``[rows, in]`` to
        ``[rows, out]``) returns the output as they compute it (bf16 sums, or float32)."""
        self.qkv, self.o, self.gate_up, self.down = linears
        self.calls = tuple(m.compute for m in linears) if self.quantized else linears
        """What the step calls for q/k/v, o, gate/up and down."""
        self.scaling = float(attn.scaling)


class DirectDecode:
    """The decode step of a Llama-family ``model`` over the paged cache, computed from the
    model's weights (see the module's docstring for what it serves)."""

    def __init__(self, model: Any) -> None:
        import torch

        config = model.config
        base = model.model
        self.embed = base.embed_tokens
        self.rotary = base.rotary_emb
        self.layers = [_Layer(layer) for layer in base.layers[:config.num_hidden_layers]]
        self.norm = (base.norm.weight, base.norm.variance_epsilon)
        self.head = model.lm_head
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None)
                            or config.hidden_size // config.num_attention_heads)
        self.torch = torch
        self.steps = 0
        """Decode steps computed."""

    def __call__(self, ids: Any, step: PagedStep) -> Any:
        """The logits ``[rows, vocab]`` of a decode step: ``ids`` ``[rows, 1]``, the rows'
        new tokens; ``step`` their paged cache (one new token each, none of them padding; a
        cascade attends through it)."""
        torch = self.torch
        self.steps += 1
        sdpa = torch.nn.functional.scaled_dot_product_attention
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        hidden = self.embed(ids)  # [rows, 1, hidden]
        rows = hidden.shape[0]
        cos, sin = self.rotary(hidden, position_ids=step.positions)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [rows, 1, 1, dim]: over the heads
        half = dim // 2  # rotate_half(x) * sin, exactly: x rolled by half, times sin signed
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        hidden = hidden.view(rows, -1)
        mask = None if step.full else step.mask
        cache_dtype = step.pool.kv.dtype
        for index, layer in enumerate(self.layers):
            qkv_of, o_of, gate_up_of, down_of = layer.calls
            # a quantized layer's output stays in the dtype it computes it (bf16 sums): what
            # takes it next promotes it to float32 exactly as the model's copy would
            residual = hidden
            x = _rms_norm(torch, hidden, *layer.norms[0])
            qkv = qkv_of(x).view(rows, 1, -1, dim)  # [rows, 1, q + k + v heads, dim]
            qk = qkv[:, :, :heads + kv_heads]  # q and k turn by the same angles
            qk = (qk * cos) + (torch.roll(qk, half, -1) * sin)
            cached = qk.to(cache_dtype)  # once, for the new keys and the query alike
            new = torch.stack((cached[:, 0, heads:], qkv[:, 0, heads + kv_heads:]))
            keys, values = step.update_decode(new, index)
            if step.cascade:  # the query as Transformers' layers give it: [rows, heads, 1, dim]
                out, _ = step.attend(layer.attn, qk[:, :, :heads].transpose(1, 2), None,
                                     scaling=layer.scaling)
            else:  # each row's query heads by key head: [rows, kv_heads, groups, dim], in
                # the cache's dtype (bf16 under a quantized model's float32 activations)
                query = cached[:, 0, :heads].reshape(rows, kv_heads, heads // kv_heads, dim)
                out = sdpa(query, keys, values, attn_mask=mask, scale=layer.scaling)
            if not layer.quantized:  # a quantized layer takes the cache's dtype as it is
                out = out.to(qk.dtype)
            hidden = residual + o_of(out.reshape(rows, heads * dim))
            residual = hidden
            x = _rms_norm(torch, hidden, *layer.norms[1])
            gate, up = gate_up_of(x).chunk(2, dim=-1)
            hidden = residual + down_of(torch.nn.functional.silu(gate.to(x.dtype)) * up)
        hidden = _rms_norm(torch, hidden, *self.norm)
        return self.head(hidden)


class _Fused:
    """Float linear layers computing side by side: one matrix product over their weights,
    concatenated (the layers' own weights become views of it: nothing is held twice)."""

    def __init__(self, linears: list[Any]) -> None:
        import torch

        with torch.no_grad():
            self.weight = torch.cat([m.weight for m in linears])
            biases = [m.bias for m in linears]
            self.bias = None if biases[0] is None else torch.cat(biases)
            start = 0
            for m in linears:
                end = start + m.weight.shape[0]
                m.weight.data = self.weight[start:end]
                if self.bias is not None:
                    m.bias.data = self.bias[start:end]
                start = end
        self.linear = torch.nn.functional.linear

    def __call__(self, x: Any) -> Any:
        return self.linear(x, self.weight, self.bias)


_FUSED: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], Any]] = (
    weakref.WeakKeyDictionary())
"""The fused layer made for each first layer of a group (and the group it was made for):
engines sharing one loaded model (instances of it with other batch settings) share the
fused weights too, rather than concatenating the views of the first's again."""


def _fused(linears: list[Any]) -> Any:
    """One callable computing ``linears``' outputs side by side: float layers' weights
    concatenated (:class:`_Fused`), or the class's own ``concat`` (the quantized layers);
    the same one for the same layers. Raises ``TypeError`` for layers of mixed or other
    kinds, with hooks, or whose biases differ in kind."""
    group = tuple(id(m) for m in linears)
    known = _FUSED.get(linears[0])
    if known is not None and known[0] == group:
        return known[1]
    fused = _fuse(linears)
    _FUSED[linears[0]] = (group, fused)
    return fused


def _fuse(linears: list[Any]) -> Any:
    import torch

    kind = type(linears[0])
    if any(type(m) is not kind or getattr(m, "_hf_hook", None) is not None for m in linears):
        raise TypeError("layers of different kinds, or hooked")
    if kind is torch.nn.Linear:
        if len({m.bias is None for m in linears}) > 1:
            raise TypeError("some layers have a bias, some not")
        return _Fused(linears)
    concat = getattr(kind, "concat", None)
    if concat is None:
        raise TypeError(f"{kind.__name__} cannot be concatenated")
    return concat(linears)


def _rms_norm(torch: Any, hidden: Any, weight: Any, eps: float) -> Any:
    """Llama's RMS norm, as Transformers' ``LlamaRMSNorm`` computes it: in float32, torch's
    fused ``rms_norm``, which gives its bits (checked on 3,000 random inputs, outlier
    channels among them) in one call instead of eight; otherwise operator for operator."""
    dtype = hidden.dtype
    if dtype == torch.float32 and weight.dtype == torch.float32:
        return torch.nn.functional.rms_norm(hidden, weight.shape, weight, eps)
    hidden = hidden.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + eps)
    return weight * hidden.to(dtype)

