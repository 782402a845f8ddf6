"""The model runner: every forward pass of the engine, over the paged key/value cache.

Four kinds of pass: a prefill of new prompts (after their cached prefixes, right-aligned,
padding in front of each part), a decode step of the running batch (one token a row), a
chunk of a long prompt on its own, and a decode step with a chunk riding in it
(:mod:`._mixed`, where the model allows). Every pass reads and writes the rows' blocks of one
:class:`._kvcache.KVPool` through a :class:`._paged.PagedStep`. Prompts just computed go into
the prefix cache (:mod:`._prefix`) by reference: their full blocks are the cache's blocks;
requests arriving together that share long uncached prefixes (all of them, or groups of
them) compute each once. Each pass is
timed and counted (:class:`EngineCounters`), and its logits go to ``select``, which chooses
the rows' next tokens and applies them (the engine's :mod:`._sampling` and
:mod:`._stopping`). Decode steps go through :class:`._static.StaticDecode` instead when it
is in use (:meth:`ModelRunner.use_static`) and serves the batch: it chooses the tokens on
the device, and ``apply`` applies them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._compat import cache_keyword
from ._counters import EngineCounters
from ._direct import DirectDecode, direct_decode
from ._errors import EngineError, UnsupportedModel
from ._kvcache import Batch, ChunkedPrompt, KVPool, Seq
from ._mixed import MixedStep, install_attention, mixed_forward, supports_mixed_steps
from ._paged import PagedStep
from ._prefix import PrefixCache
from ._request import GenerationRequest
from ._static import StaticDecode

__all__ = ["Apply", "ModelRunner", "Select"]

_CASCADE_BLOCKS = 2
"""Leading blocks all rows of a decode step must share (a system prompt) for the step to
attend to them once for all rows (:class:`._paged.PagedStep`)."""

_SHARE_LEVELS = 4
"""Most passes computing the shared prefixes of prompts arriving together (each level one
block longer at least: what all share, then what groups of them share after it, ...)."""

Select = Callable[[list[GenerationRequest], Any], Any]
"""Choose and apply the next token of each request from its row of logits; the tokens, as a
tensor on the logits' device."""

Apply = Callable[[list[GenerationRequest], list[int], list[bool]], None]
"""Apply the tokens a static decode step chose (and whether each row ended) to the
requests."""


class ModelRunner:
    """Runs ``model``'s forward passes for an engine.

    ``pad_id`` fills the padding of prompts; ``prefix`` is the prefix cache (``None``:
    none); ``block_size`` is the paged cache's block (the prefix cache's, when there is
    one); ``counters`` counts each pass; ``select`` chooses each pass's tokens.

    Serves models whose attention layers are full attention or a sliding window (each pass
    gives the model its masks ready-made: one per kind of layer). Raises
    :class:`UnsupportedModel` for any other kind of attention layer (chunked, linear, ...).
    """

    def __init__(self, model: Any, *, pad_id: int, prefix: PrefixCache | None,
                 counters: EngineCounters, select: Select, block_size: int = 32,
                 apply: Apply | None = None, kv_dtype: Any = None) -> None:
        self.windows = _attention_windows(model)
        """Per kind of attention layer, its sliding window in tokens (``None``: full
        attention); ``{}`` when every layer is full attention."""
        self.model = model
        self.pad_id = pad_id
        self.prefix = prefix
        self.counters = counters
        self.select = select
        self.apply = apply
        self.static: StaticDecode | None = None
        """The static-shape decode step (:meth:`use_static`), if in use."""
        self.direct: DirectDecode | None = direct_decode(model)
        """Decode steps computed straight over the weights (:mod:`._direct`), where the
        model allows; ``None``: through the model's ``forward``."""
        self.mixes = supports_mixed_steps(model)
        """Whether a chunk can ride in a decode pass of this model."""
        self._cache_kw = cache_keyword(model)
        device = getattr(model, "device", None)
        self._cuda = getattr(device, "type", None) == "cuda"
        self._additive = getattr(model.config, "_attn_implementation", None) != "sdpa"
        self.packs = self.mixes
        """Whether prompts of different lengths go through the model packed (no padding;
        only models whose attention functions this engine may wrap)."""
        self.cascade_blocks = _CASCADE_BLOCKS if self.mixes else 0
        """Leading blocks a decode step's rows must share to attend to them once (0:
        never; only models whose attention functions this engine may wrap)."""
        self.block_size = prefix.block_size if prefix is not None else block_size
        self.kv_dtype = kv_dtype
        self.pool = KVPool.for_model(model, self.block_size, kv_dtype)
        """Every row's keys and values (and the prefix cache's)."""
        if prefix is not None:
            prefix.block_bytes = self.pool.block_bytes
            prefix.release = self._release

    def use_static(self, on: bool, *, eos: Any = None, max_rows: int = 64,
                   graphs: bool | None = None, padded: bool | None = None) -> None:
        """Decode through a static-shape step (:class:`._static.StaticDecode`, needs
        ``apply``) when ``on``, else as before. ``eos``: the end-of-sequence ids (a tensor);
        ``graphs``: capture CUDA graphs (default: on CUDA); ``padded``: pad shapes to their
        buckets (default: with graphs). Models with sliding windows keep host-built steps
        (the static step's mask has no window)."""
        if not on or self.windows:  # (its mask has no sliding window: host-built steps)
            self.static = None
            return
        if self.apply is None:
            raise EngineError("a static decode step needs the runner's apply")
        graphs = self._cuda if graphs is None else graphs
        self.static = StaticDecode(self.model, cache_kw=self._cache_kw,
                                   additive=self._additive, eos=eos, max_rows=max_rows,
                                   graphs=graphs, padded=padded)

    def _release(self, pages: list[int]) -> None:
        self.pool.release(pages)

    def reset(self) -> None:
        """Forget every row and cached prefix: a fresh pool (after a failed pass, whose rows
        all ended with its error)."""
        if self.prefix is not None:
            self.prefix.release = lambda pages: None
            self.prefix.clear()
        self.pool = KVPool.for_model(self.model, self.block_size, self.kv_dtype)
        if self.prefix is not None:
            self.prefix.release = self._release

    # -- prompts ---------------------------------------------------------------------------

    def prefill(self, reqs: list[GenerationRequest]) -> Batch:
        """Compute the prompts of ``reqs`` (reusing cached prefixes) and their first tokens."""
        if self.prefix is not None:
            self._share_prefix(reqs)
        seqs = [self._cached(r.prompt_ids, len(r.prompt_ids) - 1) for r in reqs]
        if self.prefix is not None:
            self.prefix.hit_tokens += sum(s.length for s in seqs)
        batch = Batch(reqs, seqs, None)
        logits = self._forward(seqs, [r.prompt_ids[s.length:] for r, s in zip(reqs, seqs,
                                                                                strict=True)])
        self._remember(batch)
        batch.next_ids = self.select(reqs, logits)
        return batch

    def uncached(self, ids: list[int]) -> int:
        """Tokens of a prompt that its prefill computes: those after its cached prefix."""
        if self.prefix is None:
            return len(ids)
        chain = self.prefix.match(ids, len(ids) - 1)
        lent = self.prefix.partial(ids, chain, len(ids) - 1)
        return len(ids) - len(chain) * self.prefix.block_size - (lent[1] if lent else 0)

    def _cached(self, ids: list[int], limit: int) -> Seq:
        """A row holding the cached blocks that start ``ids`` (at most ``limit`` tokens),
        by reference, then the leading tokens of ``ids`` that a cached block after them
        shares, copied into a block of the row's own (which it goes on writing)."""
        if self.prefix is None:
            return Seq()
        chain = self.prefix.match(ids, limit)
        pages = [b.page for b in chain]
        self.pool.ref(pages)
        seq = Seq(pages, len(pages) * self.prefix.block_size)
        lent = self.prefix.partial(ids, chain, limit)
        if lent is not None:
            block, shared = lent
            seq.grow(self.pool, shared)  # may grow the pool: read its tensor after
            size, kv = self.pool.block_size, self.pool.kv
            to, source = seq.blocks[-1] * size, block.page * size
            kv[:, :, to:to + shared] = kv[:, :, source:source + shared]
            seq.length += shared
        return seq

    def _share_prefix(self, reqs: list[GenerationRequest]) -> None:
        """When requests arriving together share long uncached prefixes — all of them (a
        system prompt), or groups of them (the players of one persona) — compute each once:
        level by level (what all share, then what each group shares after it), one pass a
        level whose rows are the groups' common prefixes after their cached blocks."""
        assert self.prefix is not None
        size = self.prefix.block_size
        for _ in range(_SHARE_LEVELS):
            groups: dict[tuple[int, ...], list[list[int]]] = {}
            for r in reqs:  # by their cached blocks and the first block after them
                ids = r.prompt_ids
                cached = len(self.prefix.match(ids, len(ids) - 1)) * size
                if len(ids) - 1 - cached >= size:
                    groups.setdefault(tuple(ids[:cached + size]), []).append(ids)
            heads = []
            for first, *others in groups.values():
                if others:
                    common = min(_common_length(first, ids, len(ids) - 1) for ids in others)
                    common = min(common, len(first) - 1)
                    heads.append(first[:common - common % size])
            if not heads:
                return
            seqs = [self._cached(head, len(head)) for head in heads]
            shared = [GenerationRequest(prompt_ids=head, max_new_tokens=0,
                                        emit=lambda event: None) for head in heads]
            try:
                self._forward(seqs, [h[s.length:] for h, s in zip(heads, seqs, strict=True)])
                self._remember(Batch(shared, seqs, None))
            finally:
                for seq in seqs:
                    seq.free(self.pool)

    def _forward(self, seqs: list[Seq], new_ids: list[list[int]]) -> Any:
        """One forward pass of ``new_ids`` for each row, after what its ``seqs`` hold; the
        last logits of each row. Where the model's attention can be wrapped, the rows' new
        tokens go through the model packed, one after the other (no padding); otherwise
        right-aligned, padding in front."""
        import torch

        rows, counts = len(seqs), [len(x) for x in new_ids]
        device = self.model.device
        if self.direct is not None and min(counts) == max(counts) == 1:  # prompts cached but
            # their last token (the same prompt again, a chat's next turn): a decode step
            step = self._step(seqs, counts)
            ids = torch.tensor(new_ids, dtype=torch.long, device=device)
            with self._timed(0, rows):
                return self.direct(ids, step)
        packed = self.packs and rows > 1 and min(counts) < max(counts)
        self.counters.packed_passes += packed
        step = self._step(seqs, counts, packed=packed)
        extra: dict[str, Any] = {}
        if packed:
            ids = torch.tensor([[t for x in new_ids for t in x]], device=device)
            positions = step.positions.reshape(-1)[step._new][None]
            ends = torch.tensor(counts, device=device).cumsum(0) - 1
            keep: Any = ends
            extra = {install_attention(): step}
        else:
            width = max(counts)
            ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
            for i, tokens in enumerate(new_ids):
                ids[i, width - len(tokens):] = torch.tensor(tokens)
            ids, positions, keep = ids.to(device), step.positions, 1
        with self._timed(0, sum(counts)):
            out = self.model(input_ids=ids, attention_mask=self._masks(step),
                             position_ids=positions, use_cache=True, logits_to_keep=keep,
                             **{self._cache_kw: step}, **extra)
        return out.logits[0] if packed else out.logits[:, -1, :]

    def remember_finished(self, batch: Batch | None) -> None:
        """Put the prompt and generated tokens of ``batch``'s rows that ended (but in an
        error) into the prefix cache, before their blocks are given back: the next turn
        of a conversation, whose prompt holds this answer, computes only what is new."""
        if batch is not None:
            self._remember(batch, finished=True)

    def _remember(self, batch: Batch, *, finished: bool = False) -> None:
        """Put the prompts just computed into the prefix cache (``finished``: the ended
        rows' prompts and generated tokens, as far as their keys and values were
        computed): their full blocks, by reference."""
        prefix = self.prefix
        if prefix is None:
            return
        size, pool = prefix.block_size, self.pool
        for r, seq in zip(batch.reqs, batch.seqs, strict=True):
            if finished and r.finish_reason in (None, "error"):
                continue

            def pages_of(start: int, end: int, seq: Seq = seq) -> list[int]:
                pages = seq.blocks[start // size:end // size]
                pool.ref(pages)
                return pages

            if finished:  # the last token generated has no keys and values yet
                ids = [*r.prompt_ids, *r.generated]
                upto = min(seq.length, len(ids))
                prefix.insert(ids, upto, pages_of)
                if upto % size:  # and the block it ends in, for the next turn to borrow
                    page = seq.blocks[upto // size]
                    pool.ref([page])
                    if not prefix.insert_tail(ids, upto, page):
                        pool.release([page])
            else:
                prefix.insert(r.prompt_ids, len(r.prompt_ids), pages_of)

    # -- chunks of a long prompt ----------------------------------------------------------

    def prefill_chunk(self, item: ChunkedPrompt, size: int) -> Batch | None:
        """Prefill the next ``size`` tokens of a long prompt in a pass of their own; its
        batch of one once complete."""
        seq = self._chunk_seq(item)
        end = min(len(item.req.prompt_ids), item.done + size)
        logits = self._forward([seq], [item.req.prompt_ids[item.done:end]])
        return self._chunk_end(item, end, logits)

    def decode_and_chunk(self, batch: Batch, item: ChunkedPrompt, size: int) -> Batch | None:
        """One decode step of ``batch`` and the next ``size`` tokens of a long prompt, in one
        forward pass; the prompt's batch of one once complete."""
        import torch

        req = item.req
        seq = self._chunk_seq(item)
        rows, past = len(batch.reqs), item.done
        end = min(len(req.prompt_ids), past + size)
        size = end - past
        device = batch.next_ids.device
        row_step = PagedStep(self.pool, batch.seqs, [1] * rows)
        chunk_step = PagedStep(self.pool, [seq], [size])
        chunk = torch.tensor(req.prompt_ids[past:end], dtype=torch.long, device=device)
        ids = torch.cat([batch.next_ids, chunk])[None]
        positions = torch.cat([row_step.positions[:, 0], chunk_step.positions[0]])[None]
        step = MixedStep(rows, row_step, chunk_step, row_step.mask, chunk_step.mask)
        keep = torch.arange(rows + 1, device=device)
        keep[-1] = rows + size - 1  # the rows' tokens, and the chunk's last
        with self._timed(rows, size):
            logits = mixed_forward(self.model, ids, positions, step, keep, self._cache_kw)[0]
        batch.next_ids = self.select(batch.reqs, logits[:rows])
        return self._chunk_end(item, end, logits[rows:])

    def _chunk_seq(self, item: ChunkedPrompt) -> Seq:
        """The row a long prompt's next chunk extends: at first, its cached prefix (if any,
        counted in ``item.done``) or an empty one."""
        if item.seq is None:
            ids = item.req.prompt_ids
            item.seq = self._cached(ids, len(ids) - 1)
            item.done = item.seq.length
            if self.prefix is not None:
                self.prefix.hit_tokens += item.done
        return item.seq

    def drop_chunked(self, item: ChunkedPrompt) -> None:
        """Give back what a long prompt that will not complete holds (cancelled)."""
        if item.seq is not None:
            item.seq.free(self.pool)

    def _chunk_end(self, item: ChunkedPrompt, end: int, logits: Any) -> Batch | None:
        """Count a chunk computed up to ``end``; once the prompt is complete, its batch of
        one (cached for reuse, its first token chosen from ``logits``)."""
        self.counters.chunks += 1
        item.done = end
        req = item.req
        if end < len(req.prompt_ids) or item.seq is None:
            return None
        batch = Batch([req], [item.seq], None)
        self._remember(batch)
        batch.next_ids = self.select([req], logits)
        return batch

    # -- decode steps ---------------------------------------------------------------------

    def decode(self, batch: Batch) -> None:
        """One decode step of ``batch``: each row's next token (by the static step where
        it serves the batch)."""
        static = self.static
        if static is not None and self.apply is not None and static.serves(batch):
            with self._timed(len(batch.reqs), 0):
                tokens, ended = static.step(self.pool, batch)
            self.apply(batch.reqs, tokens, ended)
            return
        step = self._step(batch.seqs, [1] * len(batch.seqs), shared=self.cascade_blocks)
        self.counters.shared_steps += step.cascade
        with self._timed(len(batch.reqs), 0):
            if self.direct is not None:
                logits = self.direct(batch.next_ids[:, None], step)
            else:
                extra = {install_attention(): step} if step.cascade else {}
                logits = self.model(input_ids=batch.next_ids[:, None],
                                    attention_mask=self._masks(step),
                                    position_ids=step.positions, use_cache=True,
                                    **{self._cache_kw: step}, **extra).logits[:, -1, :]
        batch.next_ids = self.select(batch.reqs, logits)

    def _step(self, seqs: list[Seq], counts: list[int], *, shared: int = 0,
              packed: bool = False) -> PagedStep:
        """The paged cache of a pass (with the masks of the model's sliding windows)."""
        windows = tuple(sorted({w for w in self.windows.values() if w is not None}))
        return PagedStep(self.pool, seqs, counts, additive=self._additive, shared=shared,
                         packed=packed, windows=windows)

    def _masks(self, step: PagedStep) -> Any:
        """The mask the model gets for ``step``: one tensor when its layers are all of one
        kind, else one per kind of layer (Transformers' mask mapping, by layer type)."""
        if not self.windows:
            return step.mask
        masks = {kind: step.mask if w is None else step.window_masks[w]
                 for kind, w in self.windows.items()}
        return next(iter(masks.values())) if len(masks) == 1 else masks

    @contextmanager
    def _timed(self, rows: int, prompt_tokens: int) -> Iterator[None]:
        """Time the forward pass run in this block (on CUDA, until the GPU finished it) and
        count it: ``rows`` decode rows (a token each) and ``prompt_tokens`` prompt tokens."""
        started = time.perf_counter()
        yield
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        self.counters.count_pass(rows, prompt_tokens, time.perf_counter() - started)


def _attention_windows(model: Any) -> dict[str, int | None]:
    """Per kind of attention layer of ``model`` (its config's ``layer_types``, or
    ``"sliding_attention"`` for a model with one window for all layers), the sliding window
    in tokens (``None``: full attention); ``{}`` when every layer is full attention.
    Raises :class:`UnsupportedModel` for any other kind of layer."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    config = getattr(config, "get_text_config", lambda: config)()
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) is False:
        window = None
    kinds = set(getattr(config, "layer_types", None) or ())
    odd = sorted(kinds - {"full_attention", "sliding_attention"})
    name = getattr(config, "model_type", "this model")
    if odd:
        raise UnsupportedModel(
            f"{name}: the engine's paged cache serves full and sliding-window attention "
            f"only, and this model has {', '.join(odd)} layers")
    if not kinds:  # one kind for every layer, from the window alone (Mistral)
        kinds = {"sliding_attention" if window is not None else "full_attention"}
    if "sliding_attention" in kinds and not (isinstance(window, int) and window > 0):
        raise UnsupportedModel(f"{name}: sliding-window layers without a window size "
                               f"({window!r})")
    if kinds == {"full_attention"}:
        return {}
    return {kind: window if kind == "sliding_attention" else None for kind in sorted(kinds)}


def _common_length(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share (at most ``limit``)."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
