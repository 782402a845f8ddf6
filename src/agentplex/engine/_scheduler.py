"""The engine: one worker thread decodes every active request of a model together.

Requests arriving while others are being decoded are prefilled as a group and join the
running batch (their rows of the paged cache are added to its list), so nobody waits for a
batch to drain.
Each request keeps its own sampling arguments, stop sequences, grammar matcher and stream;
finished and cancelled rows leave the batch at the next step.

This module is the scheduling loop: the queue, when an idle engine waits for more arrivals,
which prompts join whole and which in chunks, and how large a chunk is. A prompt joining
while others decode whose uncached part is long is prefilled in chunks sized so that a chunk
adds about half a decode step: the running requests keep their pace. Where the model allows,
a chunk rides in the same forward pass as the batch's decode step; otherwise it runs in a
pass of its own between two decode steps. The passes are :class:`._runner.ModelRunner`'s;
choosing tokens is :class:`._sampling.Sampler`'s, applying them
:class:`._stopping.StopHandler`'s.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from typing import Any

from ._counters import EngineCounters
from ._errors import EngineClosed, EngineOptionError
from ._handoff import deferred
from ._kvcache import Batch, ChunkedPrompt, merge, prune
from ._prefix import PrefixCache
from ._request import GenerationRequest
from ._runner import ModelRunner
from ._sampling import Sampler, seed_request
from ._stopping import StopHandler

__all__ = ["BatchEngine"]

_PROBE = 16
"""Tokens of the first two chunks that ride in decode passes."""


class BatchEngine:
    """Serves :class:`GenerationRequest` objects for one model from a daemon thread.

    Args:
        model: a Transformers causal language model.
        tokenizer: its tokenizer.
        eos_ids: the tokens that end a request.
        grammar: a :class:`GrammarFactory` for requests with a matcher (settable later).
        max_batch_size: most requests decoded together.
        batch_wait: how long an idle engine waits for more arrivals (see :meth:`_gather`).
        prefix_cache_bytes: memory for the keys and values of prompt prefixes; 0: none.
        prefix_block: tokens per block of the prefix cache.
        prefill_chunk: tokens per prefill chunk while others decode (``None``: sized to
            about half a decode step).
        mix_chunks: let a chunk ride in the batch's decode pass (where the model allows).
        static_decode: decode through static-shape steps (:mod:`._static`; on CUDA each
            bucket's step a CUDA graph); ``None``: on CUDA only.
        kv_dtype: the dtype of the cached keys and values (default: the model's first
            parameter's); a bf16 cache is attended in bf16 by direct decode steps.
        cpu_threads: torch's intra-op threads for the engine's own thread (torch keeps
            the count per thread: the caller's threads are not changed). ``None``: on a
            CPU with at most 2 cores, 1 (measured there: one thread beat two at 1 and at
            64 callers: docs/local-models.md), torch's own count elsewhere.
    """

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
        static_decode: bool | None = None,
        kv_dtype: Any = None,
        cpu_threads: int | None = None,
    ) -> None:
        if cpu_threads is not None and (not isinstance(cpu_threads, int) or cpu_threads < 1):
            raise EngineOptionError(f"cpu_threads must be a whole number of at least 1, "
                             f"not {cpu_threads!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.cpu_threads = cpu_threads if cpu_threads is not None else _default_threads(model)
        """torch's intra-op threads in the engine's thread (``None``: torch's own)."""
        self.eos_ids = eos_ids
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(eos_ids) if eos_ids else 0)
        self._pending: deque[GenerationRequest] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.counters = EngineCounters()
        """Passes, rows, tokens and seconds so far."""
        self.prefix = PrefixCache(prefix_block, prefix_cache_bytes) if prefix_cache_bytes else None
        """The prompt-prefix cache (``None`` when ``prefix_cache_bytes`` is 0)."""
        self.prefill_chunk = prefill_chunk
        """Tokens per prefill chunk while others decode (``None``: sized to one decode step)."""
        self.chunk_share = 0.5
        """The share of a decode step a chunk may add (when ``prefill_chunk`` is ``None``)."""
        self.mix_chunks = mix_chunks
        """Whether a chunk rides in the batch's decode pass (where the model allows)."""
        self.sampler = Sampler(tokenizer, eos_ids, grammar)
        self.stops = StopHandler(tokenizer, eos_ids)
        self.runner = ModelRunner(model, pad_id=self.pad_id, prefix=self.prefix,
                                  counters=self.counters, select=self._select,
                                  block_size=prefix_block, apply=self._apply,
                                  kv_dtype=kv_dtype)
        if static_decode is None:
            static_decode = getattr(getattr(model, "device", None), "type", None) == "cuda"
        self.static_decode = static_decode

    @property
    def static_decode(self) -> bool:
        """Whether decode steps go through the static-shape step (set it between runs)."""
        return self.runner.static is not None

    @static_decode.setter
    def static_decode(self, on: bool) -> None:
        runner = self.runner
        eos = self.stops.eos_tensor(getattr(self.model, "device", None)) if on else None
        runner.use_static(on, eos=eos, max_rows=self.max_batch_size)

    @property
    def grammar(self) -> Any:
        """The :class:`GrammarFactory` that masks constrained requests' tokens."""
        return self.sampler.grammar

    @grammar.setter
    def grammar(self, grammar: Any) -> None:
        self.sampler.grammar = grammar

    def submit(self, request: GenerationRequest) -> None:
        """Queue ``request``; its events arrive through ``request.emit``.

        Raises :class:`EngineClosed` once the engine is closed.
        """
        seed_request(request)
        with self._cv:
            self._pending.append(request)
            if self._closed:
                raise EngineClosed("this model's batching engine is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentplex-batching",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.close)
            self._cv.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after its current step; waiting requests end with
        :class:`EngineClosed`."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------

    def _take(self, active: int) -> list[GenerationRequest] | None:
        """The requests to start now (``None`` once closed); waits while there is nothing
        to do, and, when idle, for more arrivals (:meth:`_gather`)."""
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
                    self.stops.finish(req, "cancelled")
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
        """The loop: take arrivals, then run one step — a prefill of the prompts joining
        whole, else a decode step of the batch — and the next chunk of a long prompt."""
        import torch

        if self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)
        runner = self.runner
        batch: Batch | None = None
        chunked: deque[ChunkedPrompt] = deque()
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
                            if runner.uncached(r.prompt_ids) > size:
                                chunked.append(ChunkedPrompt(r))
                            else:
                                whole.append(r)
                        new = whole
                    mixing = bool(chunked) and not new and self.mix_chunks and runner.mixes
                    if new:
                        batch = merge(batch, runner.prefill(new))
                    elif batch is not None and not mixing:
                        runner.decode(batch)
                    if chunked:
                        joined = self._next_chunk(batch, chunked[0], mixing)
                        if joined is not None or chunked[0].req.finish_reason is not None:
                            chunked.popleft()
                        if joined is not None:
                            batch = merge(batch, joined)
                    if batch is not None:
                        for r in batch.reqs:
                            if r.cancelled and r.finish_reason is None:
                                self.stops.finish(r, "cancelled")
                    runner.remember_finished(batch)
                    batch = prune(batch, runner.pool)
            except Exception as exc:  # report to every caller, keep serving
                for req in (batch.reqs if batch else []) + new + [c.req for c in chunked]:
                    self.stops.fail(req, exc)
                batch = None
                chunked.clear()
                runner.reset()  # what the failed pass's rows held

    def _next_chunk(self, batch: Batch | None, item: ChunkedPrompt,
                    mixing: bool) -> Batch | None:
        """Run the next chunk of a long prompt — in ``batch``'s decode pass when ``mixing``,
        else on its own — or end it if cancelled; its batch of one once complete."""
        if item.req.cancelled:
            self.stops.finish(item.req, "cancelled")
            self.runner.drop_chunked(item)
            if mixing and batch is not None:
                self.runner.decode(batch)  # the pass the chunk would have ridden in
            return None
        size = self._chunk_size()
        if mixing and batch is not None:
            if self.counters.mixed_steps < 2 and self.prefill_chunk is None:
                size = min(size, _PROBE)  # a probe, until the steps' own fit has seen chunks
            return self.runner.decode_and_chunk(batch, item, size)
        return self.runner.prefill_chunk(item, size)

    def _shut_down(self, batch: Batch | None, chunked: list[GenerationRequest]) -> None:
        with self._cv:
            waiting, self._pending = list(self._pending), deque()
        for req in (batch.reqs if batch else []) + chunked + waiting:
            self.stops.fail(req, EngineClosed("the model's batching engine was closed"))

    def _chunk_size(self) -> int:
        """Tokens per prefill chunk: about the cost of half a decode step of the batch."""
        if self.prefill_chunk is not None:
            return self.prefill_chunk
        # marginal: a pass's fixed cost is paid anyway. Mixed steps are sized from the steps
        # alone once two carried a chunk: on a CPU a token costs more in a small pass than
        # in a long prompt's, so the prompts' passes would make chunks look cheap.
        counters = self.counters
        mixing = self.mix_chunks and self.runner.mixes and counters.mixed_steps >= 2
        per_token = counters.step_cost.per_token() if mixing else None
        if per_token is None:
            per_token = counters.cost.per_token()
        if not counters.decode_cost or per_token is None:
            return 64
        # half a decode step: the running requests' gaps grow by about half while it joins
        budget = self.chunk_share * counters.decode_cost
        return max(8, min(2048, int(budget / per_token) if per_token > 0 else 2048))

    def _select(self, reqs: list[GenerationRequest], logits: Any) -> Any:
        """Choose each row's next token and apply it (the runner's ``select``)."""
        import torch

        started = time.perf_counter()
        chosen = self.sampler.choose(reqs, logits)
        self.stops.advance(reqs, chosen)
        self.counters.select_seconds += time.perf_counter() - started
        return torch.tensor(chosen, dtype=torch.long, device=logits.device)

    def _apply(self, reqs: list[GenerationRequest], chosen: list[int],
               ended: list[bool]) -> None:
        """Apply the tokens a static decode step chose (the runner's ``apply``)."""
        started = time.perf_counter()
        self.stops.advance(reqs, chosen, ended)
        self.counters.select_seconds += time.perf_counter() - started


def _default_threads(model: Any) -> int | None:
    """1 for a model on the CPU of a machine with at most 2 cores, else ``None`` (torch's
    own count): a decode step's operators are small, and on 2 cores the threads of one
    operator wait for each other longer than they save (docs/local-models.md)."""
    device = getattr(getattr(model, "device", None), "type", "cpu")
    return 1 if device == "cpu" and (os.cpu_count() or 1) <= 2 else None
