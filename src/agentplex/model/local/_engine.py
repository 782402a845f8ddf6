"""Dynamic batching: one worker thread decodes every active request of a model together.

Requests arriving while others are being decoded are prefilled as a group and merged into the
running batch (left padding, per-row position ids), so nobody waits for a batch to drain.
Each request keeps its own sampling arguments, stop sequences, grammar matcher and stream;
finished and cancelled rows leave the batch at the next step.

Prompts reuse the cached keys and values of earlier prompts' prefixes (:mod:`._prefix`):
requests arriving together that share a long prefix compute it once. A prompt joining while
others decode whose uncached part is long is prefilled in chunks sized so that a chunk adds
about half a decode step: the running requests keep their pace. Where the model allows
(:mod:`._mixed`), a chunk rides in the same forward pass as the batch's decode step;
otherwise it runs in a pass of its own between two decode steps.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ._compat import cache_keyword, returned_cache
from ._cost import PassCost
from ._detokenize import batch_decoder
from ._handoff import deferred
from ._mixed import MixedStep, mixed_forward, supports_mixed_steps
from ._prefix import KV, PrefixCache

__all__ = ["BatchEngine", "GenerationEvent", "GenerationRequest", "Sampling", "TokenScore"]


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling: greedy when ``temperature`` is 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


TokenScore = tuple[str, float, list[tuple[str, float]]]
"""A generated token, its log-probability, and the most likely tokens with theirs."""


@dataclass
class GenerationEvent:
    """What the worker reports: new text, and at the end the finish reason (or an error)."""

    text: str = ""
    output_tokens: int = 0
    finish_reason: str | None = None
    error: BaseException | None = None
    logprobs: list[TokenScore] = field(default_factory=list)
    """The new tokens' log-probabilities, when the request asked for them."""


@dataclass
class GenerationRequest:
    """One prompt to continue; ``emit`` is called from the worker thread."""

    prompt_ids: list[int]
    max_new_tokens: int
    emit: Callable[[GenerationEvent], None]
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    matcher: Any = None
    logprobs: int | None = None
    """``None``: no log-probabilities; ``k``: each token's, with the ``k`` most likely."""
    stream: bool = True
    """Whether text is sent as it comes; if not, the final event carries all of it."""
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None
    _generator: Any = None
    _decoded: str = ""
    _prefix: int = 0
    _read: int = 0
    _seen: int = 0
    _scores: list[TokenScore] = field(default_factory=list)

    def cancel(self) -> None:
        """Ask the worker to drop this request at its next step."""
        self.cancelled = True


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might still become a stop sequence (or a UTF-8 char)."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


@dataclass
class _Batch:
    reqs: list[GenerationRequest]
    cache: Any
    mask: Any
    next_ids: Any


@dataclass
class _Chunked:
    """A long prompt being prefilled chunk by chunk while a batch decodes."""

    req: GenerationRequest
    done: int = 0
    cache: Any = None
    """The keys and values of the prompt so far (a ``DynamicCache`` of one row, ``done``
    tokens, no padding), extended in place by the next chunk; ``None`` before the first."""


class BatchEngine:
    """Serves :class:`GenerationRequest` objects for one model from a daemon thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        eos_ids: set[int],
        grammar: Any = None,
        max_batch_size: int = 64,
        batch_wait: float = 0.005,
        prefix_cache_bytes: int = 512 * 2**20,
        prefix_block: int = 32,
        prefill_chunk: int | None = None,
        mix_chunks: bool = True,
    ) -> None:
        self.model = model
        self._cache_kw = cache_keyword(model)
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.grammar = grammar
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(eos_ids) if eos_ids else 0)
        self._pending: deque[GenerationRequest] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = 0
        """Forward passes run so far (prefills and decode steps)."""
        self.max_rows_seen = 0
        """The largest batch decoded so far."""
        self.forward_seconds = 0.0
        """Time spent in the model's forward passes (on CUDA, until the GPU finished them)."""
        self.prefill_seconds = 0.0
        """The part of ``forward_seconds`` spent on prompts (the rest is decode steps)."""
        self.select_seconds = 0.0
        """Time spent choosing tokens (grammar masks, sampling, stop checks, detokenizing)."""
        self.prefix = PrefixCache(prefix_block, prefix_cache_bytes) if prefix_cache_bytes else None
        """The prompt-prefix cache (``None`` when ``prefix_cache_bytes`` is 0)."""
        self.prefill_chunk = prefill_chunk
        """Tokens per prefill chunk while others decode (``None``: sized to one decode step)."""
        self.prefill_tokens = 0
        """Prompt tokens computed so far (tokens served from the prefix cache excluded)."""
        self.chunks = 0
        """Prefill chunks run while others decode."""
        self.chunk_share = 0.5
        """The share of a decode step a chunk may add (when ``prefill_chunk`` is ``None``)."""
        self.mix_chunks = mix_chunks
        """Whether a chunk rides in the batch's decode pass (where the model allows)."""
        self.mixed_steps = 0
        """Forward passes that decoded the batch and prefilled a chunk together."""
        self._mixes = supports_mixed_steps(model)
        self._decode_cost = 0.0
        self._cost = PassCost()
        self._step_cost = PassCost()  # decode passes, with or without a chunk riding
        device = getattr(model, "device", None)
        self._cuda = getattr(device, "type", None) == "cuda"
        self._decode_many = batch_decoder(tokenizer)

    def submit(self, request: GenerationRequest) -> None:
        """Queue ``request``; its events arrive through ``request.emit``."""
        if request.sampling.seed is not None:
            import torch

            request._generator = torch.Generator().manual_seed(request.sampling.seed)
        with self._cv:
            self._pending.append(request)
            if self._closed:
                raise RuntimeError("this model's batching engine is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentplex-batching",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.close)
            self._cv.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after its current step; waiting requests get an error."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- worker ------------------------------------------------------------------------

    def _take(self, active: int) -> list[GenerationRequest] | None:
        with self._cv:
            while not self._pending and not active and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            if not active and self.batch_wait > 0:
                self._gather()
            room = self.max_batch_size - active
            taken: list[GenerationRequest] = []
            while self._pending and len(taken) < room:
                req = self._pending.popleft()
                if req.cancelled:
                    self._finish(req, "cancelled")
                else:
                    taken.append(req)
            return taken

    def _gather(self) -> None:
        """Let requests arriving together batch (called by an idle engine, holding the lock):
        wait until ``batch_wait`` passes without a new one, at most ten such waits, or the
        batch is full. Each arrival wakes the worker; taking the requests then would start
        a burst with its first two, the others joining later pass by pass."""
        end = time.monotonic() + 10 * self.batch_wait
        while len(self._pending) < self.max_batch_size and not self._closed:
            count, left = len(self._pending), end - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(min(self.batch_wait, left))
            if len(self._pending) == count:
                return

    def _run(self) -> None:
        import torch

        batch: _Batch | None = None
        chunked: deque[_Chunked] = deque()
        while True:
            new = self._take((len(batch.reqs) if batch else 0) + len(chunked))
            if new is None:
                self._shut_down(batch, [c.req for c in chunked])
                return
            try:
                with torch.inference_mode(), deferred():
                    if new and batch is not None:  # long prompts join in chunks
                        size = self._chunk_size()
                        whole = []
                        for r in new:  # the prompts' cached prefixes cost nothing
                            if self._uncached(r.prompt_ids) > size:
                                chunked.append(_Chunked(r))
                            else:
                                whole.append(r)
                        new = whole
                    mixing = bool(chunked) and not new and self.mix_chunks and self._mixes
                    if new:
                        batch = self._merge(batch, self._prefill(new))
                    elif batch is not None and not mixing:
                        self._decode(batch)
                    if chunked:
                        if mixing and batch is not None:  # one pass: decode and a chunk
                            joined = self._decode_and_chunk(batch, chunked[0])
                        else:
                            joined = self._prefill_chunk(chunked[0])
                        if joined is not None or chunked[0].req.finish_reason is not None:
                            chunked.popleft()
                        if joined is not None:
                            batch = self._merge(batch, joined)
                    batch = self._prune(batch)
            except Exception as exc:  # report to every caller, keep serving
                for req in (batch.reqs if batch else []) + new + [c.req for c in chunked]:
                    if req.finish_reason is None:
                        req.finish_reason = "error"
                        self._emit(req, GenerationEvent(error=exc, finish_reason="error"))
                batch = None
                chunked.clear()

    def _shut_down(self, batch: _Batch | None, chunked: list[GenerationRequest]) -> None:
        with self._cv:
            waiting, self._pending = list(self._pending), deque()
        for req in (batch.reqs if batch else []) + chunked + waiting:
            if req.finish_reason is None:
                req.finish_reason = "error"
                error = RuntimeError("the model's batching engine was closed")
                self._emit(req, GenerationEvent(error=error, finish_reason="error"))

    def _prefill(self, reqs: list[GenerationRequest]) -> _Batch:
        """Compute the prompts of ``reqs`` (reusing cached prefixes) and their first tokens."""
        if self.prefix is not None:
            self._share_prefix(reqs)
        pasts: list[KV | None] = []
        done: list[int] = []
        for r in reqs:
            chain = self.prefix.match(r.prompt_ids, len(r.prompt_ids) - 1) if self.prefix else []
            pasts.append(PrefixCache.assemble(chain) if chain else None)
            done.append(len(chain) * (self.prefix.block_size if self.prefix else 0))
        if self.prefix is not None:
            self.prefix.hit_tokens += sum(done)
        batch, logits = self._forward(reqs, pasts, done,
                                      [r.prompt_ids[d:] for r, d in zip(reqs, done, strict=True)])
        self._remember(batch)
        batch.next_ids = self._select(reqs, logits)
        return batch

    def _share_prefix(self, reqs: list[GenerationRequest]) -> None:
        """When requests arriving together share a long uncached prefix, compute it once."""
        assert self.prefix is not None
        size = self.prefix.block_size
        first = reqs[0].prompt_ids
        common = len(first) - 1
        sharing = 0
        for r in reqs[1:]:
            n = _common_length(first, r.prompt_ids, len(r.prompt_ids) - 1)
            if n >= size:
                sharing += 1
                common = min(common, n)
        common -= common % size
        if not sharing or common < size:
            return
        cached = len(self.prefix.match(first, common)) * size
        if common - cached < size:
            return
        past = PrefixCache.assemble(self.prefix.match(first, cached)) if cached else None
        shared = GenerationRequest(prompt_ids=list(first[:common]), max_new_tokens=0,
                                   emit=lambda event: None)
        batch, _ = self._forward([shared], [past], [cached], [shared.prompt_ids[cached:]])
        self._remember(batch)

    def _forward(self, reqs: list[GenerationRequest], pasts: list[KV | None], done: list[int],
                 new_ids: list[list[int]]) -> tuple[_Batch, Any]:
        """One forward pass of ``new_ids`` for each row, after its cached ``pasts`` (``done``
        tokens each): rows are right-aligned, padding goes in front of each part."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        rows, width_past, width_new = len(reqs), max(done), max(len(x) for x in new_ids)
        ids = torch.full((rows, width_new), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width_past + width_new), dtype=torch.long)
        for i, tokens in enumerate(new_ids):
            ids[i, width_new - len(tokens):] = torch.tensor(tokens)
            mask[i, width_past - done[i]:width_past] = 1
            mask[i, width_past + width_new - len(tokens):] = 1
        ids, mask = ids.to(device), mask.to(device)
        cache = DynamicCache()
        if width_past:  # one zeroed tensor for every layer, one copy per row
            template = next(p for p in pasts if p is not None)
            layers, _, heads, _, dims = template.shape
            both = template.new_zeros((layers, 2, rows, heads, width_past, dims))
            for i, past in enumerate(pasts):
                if past is not None:
                    both[:, :, i, :, width_past - done[i]:] = past
            cache = DynamicCache([(both[index, 0], both[index, 1]) for index in range(layers)])
        positions = self._positions(mask)[:, width_past:]
        return self._prefill_forward(reqs, ids, mask, positions, cache,
                                     sum(len(x) for x in new_ids))

    def _prefill_forward(self, reqs: list[GenerationRequest], ids: Any, mask: Any,
                         positions: Any, cache: Any, computed: int) -> tuple[_Batch, Any]:
        """Run one prefill forward pass, counting its cost; the batch and last logits."""
        with self._timed(0, computed):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        return _Batch(reqs, returned_cache(out), mask, None), out.logits[:, -1, :]

    def _remember(self, batch: _Batch) -> None:
        """Put the prompts just computed into the prefix cache: the tokens not cached yet, of
        every row and layer, are copied out of the batch's cache in one operation."""
        if self.prefix is None:
            return
        import torch

        size = self.prefix.block_size
        mask = batch.mask.cpu()
        columns, spans = [], []
        for i, r in enumerate(batch.reqs):
            row = mask[i].nonzero().squeeze(1).tolist()
            start = len(self.prefix.match(r.prompt_ids, len(r.prompt_ids))) * size
            end = len(r.prompt_ids) - len(r.prompt_ids) % size
            columns.append(row)
            if start < end:
                spans.append((row[start], row[end - 1] + 1))
        if not spans:
            return
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        fresh = torch.stack([t for layer in batch.cache.layers
                             for t in (layer.keys[:, :, lo:hi], layer.values[:, :, lo:hi])])
        fresh = fresh.view(-1, 2, *fresh.shape[1:])  # [layers, 2, rows, heads, tokens, dim]

        for i, r in enumerate(batch.reqs):

            def kv_of(start: int, end: int, i: int = i) -> KV:
                first, last = columns[i][start] - lo, columns[i][end - 1] + 1 - lo
                kv = fresh[:, :, i, :, first:last]
                if last - first != end - start:  # across the padding: cached | new tokens
                    index = [c - lo for c in columns[i][start:end]]
                    kv = kv.index_select(3, torch.tensor(index, device=kv.device))
                return kv

            self.prefix.insert(r.prompt_ids, len(r.prompt_ids), kv_of)

    def _uncached(self, ids: list[int]) -> int:
        """Tokens of a prompt that its prefill computes: those after its cached prefix."""
        if self.prefix is None:
            return len(ids)
        return len(ids) - len(self.prefix.match(ids, len(ids) - 1)) * self.prefix.block_size

    def _chunk_size(self) -> int:
        """Tokens per prefill chunk: about the cost of half a decode step of the batch."""
        if self.prefill_chunk is not None:
            return self.prefill_chunk
        # marginal: a pass's fixed cost is paid anyway. Mixed steps are sized from the steps
        # alone once two carried a chunk: on a CPU a token costs more in a small pass than
        # in a long prompt's, so the prompts' passes would make chunks look cheap.
        mixing = self.mix_chunks and self._mixes and self.mixed_steps >= 2
        per_token = self._step_cost.per_token() if mixing else None
        if per_token is None:
            per_token = self._cost.per_token()
        if not self._decode_cost or per_token is None:
            return 64
        # half a decode step: the running requests' gaps grow by about half while it joins
        budget = self.chunk_share * self._decode_cost
        return max(8, min(2048, int(budget / per_token) if per_token > 0 else 2048))

    def _chunk_cache(self, item: _Chunked) -> Any:
        """The cache a long prompt's next chunk extends: at first, its cached prefix (if
        any, counted in ``item.done``) or an empty one."""
        from transformers import DynamicCache

        prefix, ids = self.prefix, item.req.prompt_ids
        if item.cache is None:
            item.cache = DynamicCache()
            chain = prefix.match(ids, len(ids) - 1) if prefix is not None else []
            if chain and prefix is not None:
                item.cache = DynamicCache([(k[None], v[None])
                                           for k, v in PrefixCache.assemble(chain)])
                item.done = len(chain) * prefix.block_size
                prefix.hit_tokens += item.done
        return item.cache

    def _prefill_chunk(self, item: _Chunked) -> _Batch | None:
        """Prefill the next chunk of a long prompt; its batch of one once complete."""
        import torch

        req = item.req
        if req.cancelled:
            self._finish(req, "cancelled")
            return None
        cache = self._chunk_cache(item)
        end = min(len(req.prompt_ids), item.done + self._chunk_size())
        device = self.model.device
        ids = torch.tensor([req.prompt_ids[item.done:end]], device=device)
        mask = torch.ones((1, end), dtype=torch.long, device=device)
        positions = torch.arange(item.done, end, device=device)[None]
        _, logits = self._prefill_forward([req], ids, mask, positions, cache, end - item.done)
        return self._chunk_end(item, end, logits)

    def _decode_and_chunk(self, batch: _Batch, item: _Chunked) -> _Batch | None:
        """One decode step of ``batch`` and the next chunk of a long prompt, in one forward
        pass; the prompt's batch of one once complete."""
        import torch

        req = item.req
        if req.cancelled:
            self._finish(req, "cancelled")
            self._decode(batch)
            return None
        cache = self._chunk_cache(item)
        rows, past = len(batch.reqs), item.done
        size = self._chunk_size()
        if self.mixed_steps < 2 and self.prefill_chunk is None:
            size = min(size, _PROBE)  # a probe, until the steps' own fit has seen chunks
        end = min(len(req.prompt_ids), past + size)
        size = end - past
        device = batch.mask.device
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((rows, 1))], dim=1)
        chunk = torch.tensor(req.prompt_ids[past:end], dtype=torch.long, device=device)
        ids = torch.cat([batch.next_ids, chunk])[None]
        positions = torch.cat([batch.mask.sum(dim=1) - 1,
                               torch.arange(past, end, device=device)])[None]
        queries = torch.arange(size, device=device)[:, None]
        causal = torch.arange(end, device=device)[None] <= queries + past
        step = MixedStep(rows, batch.cache, cache, batch.mask.bool()[:, None, None, :],
                         causal[None, None])
        keep = torch.arange(rows + 1, device=device)
        keep[-1] = rows + size - 1  # the rows' tokens, and the chunk's last
        with self._timed(rows, size):
            logits = mixed_forward(self.model, ids, positions, step, keep, self._cache_kw)[0]
        batch.next_ids = self._select(batch.reqs, logits[:rows])
        return self._chunk_end(item, end, logits[rows:])

    def _chunk_end(self, item: _Chunked, end: int, logits: Any) -> _Batch | None:
        """Count a chunk computed up to ``end``; once the prompt is complete, its batch of
        one (cached for reuse, its first token chosen from ``logits``)."""
        import torch

        self.chunks += 1
        item.done = end
        req = item.req
        if end < len(req.prompt_ids):
            return None
        mask = torch.ones((1, end), dtype=torch.long, device=self.model.device)
        batch = _Batch([req], item.cache, mask, None)
        self._remember(batch)
        batch.next_ids = self._select([req], logits)
        return batch

    def _decode(self, batch: _Batch) -> None:
        import torch

        ones = batch.mask.new_ones((batch.mask.shape[0], 1))
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        positions = batch.mask.sum(dim=1, keepdim=True) - 1
        with self._timed(len(batch.reqs), 0):
            out = self.model(input_ids=batch.next_ids[:, None], attention_mask=batch.mask,
                             position_ids=positions, use_cache=True,
                             **{self._cache_kw: batch.cache})
        batch.cache = returned_cache(out)
        batch.next_ids = self._select(batch.reqs, out.logits[:, -1, :])

    @contextmanager
    def _timed(self, rows: int, prompt_tokens: int) -> Iterator[None]:
        """Time the forward pass run in this block (on CUDA, until the GPU finished it) and
        count it: ``rows`` decode rows (a token each) and ``prompt_tokens`` prompt tokens."""
        started = time.perf_counter()
        yield
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = rows + prompt_tokens
        self.steps += 1
        self.forward_seconds += seconds
        self.prefill_seconds += seconds * prompt_tokens / tokens  # the prompts' share
        self.prefill_tokens += prompt_tokens
        self._cost.observe(tokens, seconds)
        if rows:  # a decode step, a chunk riding in it or not
            self._step_cost.observe(tokens, seconds)
            self.max_rows_seen = max(self.max_rows_seen, rows)
            if prompt_tokens:
                self.mixed_steps += 1
            else:
                self._decode_cost = _ema(self._decode_cost, seconds)

    @staticmethod
    def _positions(mask: Any) -> Any:
        return (mask.cumsum(dim=1) - 1).clamp(min=0)

    def _select(self, reqs: list[GenerationRequest], logits: Any) -> Any:
        """Choose each row's next token (masking by grammar, sampling or greedy) and apply it."""
        import torch

        started = time.perf_counter()
        logits = logits.float()
        scored = [i for i, r in enumerate(reqs) if r.logprobs is not None]
        logprobs = logits[scored].log_softmax(dim=-1) if scored else None
        constrained = [i for i, r in enumerate(reqs) if r.matcher is not None]
        if constrained and self.grammar is not None:
            bitmask = self.grammar.allocate_bitmask(len(reqs))
            for i in constrained:
                reqs[i].matcher.fill_next_token_bitmask(bitmask, i)
            closing = [i for i in constrained if _near_budget(reqs[i])]
            self.grammar.prefer_closing(logits, closing)
            self.grammar.apply_bitmask(logits, bitmask, constrained)
        sampled = [i for i, r in enumerate(reqs) if r.sampling.temperature > 0]
        chosen = _argmax(logits) if len(sampled) < len(reqs) else [0] * len(reqs)
        if sampled:
            rows = logits if len(sampled) == len(reqs) else logits[sampled]
            drawn = _sample([reqs[i] for i in sampled], rows)
            for i, token in zip(sampled, drawn, strict=True):
                chosen[i] = token
        if logprobs is not None:
            for row, i in enumerate(scored):
                self._score(reqs[i], logprobs[row], int(chosen[i]))
        self._advance(reqs, chosen)
        self.select_seconds += time.perf_counter() - started
        return torch.tensor(chosen, dtype=torch.long, device=logits.device)

    def _score(self, req: GenerationRequest, logprobs: Any, token: int) -> None:
        """Keep the chosen token's log-probability (and the top ones) for the next event."""
        if req.finish_reason is not None or token in self.eos_ids:
            return
        decode = self.tokenizer.decode
        top: list[tuple[str, float]] = []
        if req.logprobs:
            values, indices = logprobs.topk(req.logprobs)
            top = [(decode([int(t)]), float(v))
                   for v, t in zip(values.tolist(), indices.tolist(), strict=True)]
        req._scores.append((decode([token]), float(logprobs[token]), top))

    def _advance(self, reqs: list[GenerationRequest], chosen: list[int]) -> None:
        """Give each unfinished row its chosen token: the end at an end-of-sequence token,
        else its new text (every row's windows decoded in one call), stops and events."""
        rows: list[tuple[GenerationRequest, bool]] = []  # and whether it ended
        windows: list[list[int]] = []
        for req, token in zip(reqs, chosen, strict=True):
            if req.finish_reason is not None:
                continue
            if req.matcher is not None:
                req.matcher.accept_token(token)
            req.generated.append(token)
            ended = token in self.eos_ids
            rows.append((req, ended))
            if not ended:  # as Transformers' streamer: only a short window is decoded
                windows += (req.generated[req._prefix:req._read], req.generated[req._prefix:])
        texts = iter(self._decode_many(windows) if windows else ())
        for req, ended in rows:
            if ended:
                self._finish(req, "stop")
            else:
                self._extend(req, next(texts), next(texts))

    def _extend(self, req: GenerationRequest, before: str, after: str) -> None:
        """Add the text of ``req``'s new token (``after`` decodes the window that ``before``
        decoded, and the tokens since), then end it or send what can be shown."""
        if len(after) > len(before) and not after.endswith("\ufffd"):
            req._decoded += after[len(before):]
            req._prefix, req._read = req._read, len(req.generated)
            text = req._decoded
        else:  # an incomplete character: shown once complete
            text = req._decoded + after[len(before):]
        for stop in req.stop:
            at = text.find(stop, max(0, req._seen - len(stop)))
            if at >= 0:
                text = text[:at]
                req.finish_reason = "stop"
        req.text = text
        if req.finish_reason is None and req.matcher is not None and req.matcher.is_terminated():
            req.finish_reason = "stop"
        if req.finish_reason is None and len(req.generated) >= req.max_new_tokens:
            req.finish_reason = "length"
        if req.finish_reason is not None:
            self._finish(req, req.finish_reason)
            return
        upto = len(text) - _held_back(text, req.stop)
        if upto > req._seen:  # the text that can no longer change
            req._seen = upto
            if req.stream:
                delta, req.sent = text[req.sent:upto], upto
                self._emit(req, GenerationEvent(text=delta, output_tokens=len(req.generated)))

    def _finish(self, req: GenerationRequest, reason: str) -> None:
        req.finish_reason = reason
        delta = req.text[req.sent:] if reason != "cancelled" else ""
        req.sent = len(req.text)
        self._emit(req, GenerationEvent(text=delta, output_tokens=len(req.generated),
                                        finish_reason=reason))

    def _emit(self, req: GenerationRequest, event: GenerationEvent) -> None:
        if req._scores and event.error is None:
            event.logprobs, req._scores = req._scores, []
        try:
            req.emit(event)
        except RuntimeError:  # the caller's event loop is gone
            req.cancelled = True

    def _merge(self, old: _Batch | None, new: _Batch) -> _Batch:
        """Join two batches: left-pad the shorter cache and stack them along the batch axis."""
        import torch
        from transformers import DynamicCache

        if old is None:
            return new
        if all(r.finish_reason is not None for r in new.reqs):
            return old  # done at their first token (or cancelled): nothing to decode
        width = max(old.mask.shape[1], new.mask.shape[1])
        layers = [(_stack(a.keys, b.keys, 2, width), _stack(a.values, b.values, 2, width))
                  for a, b in zip(old.cache.layers, new.cache.layers, strict=True)]
        return _Batch(old.reqs + new.reqs, DynamicCache(layers),
                      _stack(old.mask, new.mask, 1, width),
                      torch.cat([old.next_ids, new.next_ids]))

    def _prune(self, batch: _Batch | None) -> _Batch | None:
        """Drop finished and cancelled rows, and columns that are padding in every row."""
        import torch

        if batch is None:
            return None
        for r in batch.reqs:
            if r.cancelled and r.finish_reason is None:
                self._finish(r, "cancelled")
        keep = [i for i, r in enumerate(batch.reqs) if r.finish_reason is None]
        if not keep:
            return None
        if len(keep) < len(batch.reqs):
            index = torch.tensor(keep, device=batch.mask.device)
            batch.cache.batch_select_indices(index)
            batch.mask = batch.mask[index]
            batch.next_ids = batch.next_ids[index]
            batch.reqs = [batch.reqs[i] for i in keep]
            first = int(batch.mask.any(dim=0).nonzero()[0])
            if first > 0:
                batch.mask = batch.mask[:, first:]
                for layer in batch.cache.layers:
                    layer.keys = layer.keys[:, :, first:, :]
                    layer.values = layer.values[:, :, first:, :]
        return batch


_PROBE = 16
"""Tokens of the first two chunks that ride in decode passes."""


def _stack(a: Any, b: Any, dim: int, width: int) -> Any:
    """``a``'s rows, then ``b``'s, each left-padded with zeros to ``width`` along ``dim``:
    one copy of each (padding one first and concatenating after would copy it twice)."""
    shape = list(a.shape)
    shape[0], shape[dim] = a.shape[0] + b.shape[0], width
    out = a.new_empty(shape)
    start = 0
    for part in (a, b):
        rows = out.narrow(0, start, part.shape[0])
        missing = width - part.shape[dim]
        rows.narrow(dim, 0, missing).zero_()
        rows.narrow(dim, missing, part.shape[dim]).copy_(part)
        start += part.shape[0]
    return out


def _common_length(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share (at most ``limit``)."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _ema(old: float, new: float, weight: float = 0.3) -> float:
    return new if not old else old + weight * (new - old)


def _argmax(logits: Any) -> list[int]:
    """Each row's most likely token (the first of equals). On a CPU through NumPy, whose
    argmax is several times faster there than torch's (SIMD): 10 ms against 2 for 256 rows
    of a 49k vocabulary."""
    if logits.device.type == "cpu":
        return list(logits.numpy().argmax(axis=-1).tolist())
    return list(logits.argmax(dim=-1).tolist())


def _near_budget(req: GenerationRequest) -> bool:
    """Whether a constrained request should start closing its structure to end valid."""
    remaining = req.max_new_tokens - len(req.generated)
    return remaining <= max(8, req.max_new_tokens // 4)


def _sample(reqs: list[GenerationRequest], logits: Any) -> list[int]:
    """Draw a token for each of ``reqs`` (a row of ``logits`` each): one softmax and one
    inverse-CDF search for all rows; per row only a uniform number from its generator, so a
    seeded row draws the same token whichever rows it is decoded with."""
    import torch

    temperatures = logits.new_tensor([r.sampling.temperature for r in reqs])
    scores = logits / temperatures[:, None]
    for row, r in enumerate(reqs):  # the rare top-k / top-p rows, one at a time
        if r.sampling.top_k > 0 or r.sampling.top_p < 1.0:
            scores[row] = _truncate(scores[row], r.sampling)
    cdf = scores.softmax(dim=-1).cumsum(dim=-1)
    uniform = torch.cat([torch.rand(1, generator=r._generator) for r in reqs]).to(cdf.device)
    total = cdf[:, -1:]
    tokens = torch.searchsorted(cdf, uniform[:, None] * total, right=True).squeeze(1).tolist()
    # the first token whose CDF passes the draw has a probability above 0; a rounding at the
    # top may pass none: then the last token that has one (where the CDF reaches its total)
    return [t if t < cdf.shape[1] else int((cdf[row] < total[row]).sum())
            for row, t in enumerate(tokens)]


def _truncate(scores: Any, sampling: Sampling) -> Any:
    """``scores`` with the tokens outside ``top_k`` and ``top_p`` set to minus infinity."""
    import torch

    if sampling.top_k > 0:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1])).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - ordered.softmax(dim=-1) > sampling.top_p
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    return scores
