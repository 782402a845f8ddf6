"""Dynamic batching: one worker thread decodes every active request of a model together.

Requests arriving while others are being decoded are prefilled as a group and merged into the
running batch (left padding, per-row position ids), so nobody waits for a batch to drain.
Each request keeps its own sampling arguments, stop sequences, grammar matcher and stream;
finished and cancelled rows leave the batch at the next step.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchEngine", "GenerationEvent", "GenerationRequest", "Sampling"]


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling: greedy when ``temperature`` is 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


@dataclass
class GenerationEvent:
    """What the worker reports: new text, and at the end the finish reason (or an error)."""

    text: str = ""
    output_tokens: int = 0
    finish_reason: str | None = None
    error: BaseException | None = None


@dataclass
class GenerationRequest:
    """One prompt to continue; ``emit`` is called from the worker thread."""

    prompt_ids: list[int]
    max_new_tokens: int
    emit: Callable[[GenerationEvent], None]
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    matcher: Any = None
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None
    _generator: Any = None
    _decoded: str = ""
    _prefix: int = 0
    _read: int = 0

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
    ) -> None:
        self.model = model
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
        """Time spent in the model's forward passes."""
        self.select_seconds = 0.0
        """Time spent choosing tokens (grammar masks, sampling, stop checks, detokenizing)."""

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
            if not active and len(self._pending) < self.max_batch_size and self.batch_wait > 0:
                self._cv.wait(self.batch_wait)
            room = self.max_batch_size - active
            taken: list[GenerationRequest] = []
            while self._pending and len(taken) < room:
                req = self._pending.popleft()
                if req.cancelled:
                    self._finish(req, "cancelled")
                else:
                    taken.append(req)
            return taken

    def _run(self) -> None:
        import torch

        batch: _Batch | None = None
        while True:
            new = self._take(len(batch.reqs) if batch else 0)
            if new is None:
                self._shut_down(batch)
                return
            try:
                with torch.inference_mode():
                    if new:
                        batch = self._merge(batch, self._prefill(new))
                    elif batch is not None:
                        self._decode(batch)
                    batch = self._prune(batch)
            except Exception as exc:  # report to every caller, keep serving
                for req in (batch.reqs if batch else []) + new:
                    if req.finish_reason is None:
                        req.finish_reason = "error"
                        self._emit(req, GenerationEvent(error=exc, finish_reason="error"))
                batch = None

    def _shut_down(self, batch: _Batch | None) -> None:
        with self._cv:
            waiting, self._pending = list(self._pending), deque()
        for req in (batch.reqs if batch else []) + waiting:
            if req.finish_reason is None:
                req.finish_reason = "error"
                error = RuntimeError("the model's batching engine was closed")
                self._emit(req, GenerationEvent(error=error, finish_reason="error"))

    def _prefill(self, reqs: list[GenerationRequest]) -> _Batch:
        import torch
        from transformers import DynamicCache

        device = self.model.device
        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        cache = DynamicCache()
        started = time.perf_counter()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=self._positions(mask),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.forward_seconds += time.perf_counter() - started
        self.steps += 1
        batch = _Batch(reqs, out.past_key_values, mask, None)
        batch.next_ids = self._select(reqs, out.logits[:, -1, :])
        return batch

    def _decode(self, batch: _Batch) -> None:
        import torch

        ones = batch.mask.new_ones((batch.mask.shape[0], 1))
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        positions = batch.mask.sum(dim=1, keepdim=True) - 1
        started = time.perf_counter()
        out = self.model(input_ids=batch.next_ids[:, None], attention_mask=batch.mask,
                         position_ids=positions, past_key_values=batch.cache, use_cache=True)
        self.forward_seconds += time.perf_counter() - started
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(batch.reqs))
        batch.cache = out.past_key_values
        batch.next_ids = self._select(batch.reqs, out.logits[:, -1, :])

    @staticmethod
    def _positions(mask: Any) -> Any:
        return (mask.cumsum(dim=1) - 1).clamp(min=0)

    def _select(self, reqs: list[GenerationRequest], logits: Any) -> Any:
        """Choose each row's next token (masking by grammar, sampling or greedy) and apply it."""
        import torch

        started = time.perf_counter()
        logits = logits.float()
        constrained = [i for i, r in enumerate(reqs) if r.matcher is not None]
        if constrained and self.grammar is not None:
            bitmask = self.grammar.allocate_bitmask(len(reqs))
            for i in constrained:
                reqs[i].matcher.fill_next_token_bitmask(bitmask, i)
            closing = [i for i in constrained if _near_budget(reqs[i])]
            self.grammar.prefer_closing(logits, closing)
            self.grammar.apply_bitmask(logits, bitmask, constrained)
        chosen = logits.argmax(dim=-1).tolist()
        for i, r in enumerate(reqs):
            if r.sampling.temperature > 0:
                chosen[i] = _sample(logits[i], r.sampling, r._generator)
            self._advance(r, int(chosen[i]))
        self.select_seconds += time.perf_counter() - started
        return torch.tensor(chosen, dtype=torch.long, device=logits.device)

    def _advance(self, req: GenerationRequest, token: int) -> None:
        if req.finish_reason is not None:
            return
        if req.matcher is not None:
            req.matcher.accept_token(token)
        if token in self.eos_ids:
            req.generated.append(token)
            self._finish(req, "stop")
            return
        req.generated.append(token)
        text = self._detokenize(req)
        for stop in req.stop:
            at = text.find(stop, max(0, req.sent - len(stop)))
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
        if upto > req.sent:
            delta, req.sent = text[req.sent:upto], upto
            self._emit(req, GenerationEvent(text=delta, output_tokens=len(req.generated)))

    def _detokenize(self, req: GenerationRequest) -> str:
        """The text so far, decoding only a short window of tokens (as Transformers' streamer)."""
        decode = self.tokenizer.decode
        before = decode(req.generated[req._prefix:req._read], skip_special_tokens=False)
        after = decode(req.generated[req._prefix:], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            req._decoded += after[len(before):]
            req._prefix, req._read = req._read, len(req.generated)
            return req._decoded
        return req._decoded + str(after[len(before):])

    def _finish(self, req: GenerationRequest, reason: str) -> None:
        req.finish_reason = reason
        delta = req.text[req.sent:] if reason != "cancelled" else ""
        req.sent = len(req.text)
        self._emit(req, GenerationEvent(text=delta, output_tokens=len(req.generated),
                                        finish_reason=reason))

    def _emit(self, req: GenerationRequest, event: GenerationEvent) -> None:
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
        width = max(old.mask.shape[1], new.mask.shape[1])

        def pad(t: Any, dim: int) -> Any:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        layers = []
        for a, b in zip(old.cache.layers, new.cache.layers, strict=True):
            keys = torch.cat([pad(a.keys, 2), pad(b.keys, 2)], dim=0)
            values = torch.cat([pad(a.values, 2), pad(b.values, 2)], dim=0)
            layers.append((keys, values))
        mask = torch.cat([pad(old.mask, 1), pad(new.mask, 1)], dim=0)
        return _Batch(old.reqs + new.reqs, DynamicCache(layers), mask,
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


def _near_budget(req: GenerationRequest) -> bool:
    """Whether a constrained request should start closing its structure to end valid."""
    remaining = req.max_new_tokens - len(req.generated)
    return remaining <= max(8, req.max_new_tokens // 4)


def _sample(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    scores = logits / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1])).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - ordered.softmax(dim=-1) > sampling.top_p
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    probs = scores.softmax(dim=-1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator).item())
