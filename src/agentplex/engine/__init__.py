"""``agentplex.engine``: the local inference engine behind the Transformers chat model.

One :class:`BatchEngine` per loaded model serves every concurrent request of that model
from one worker thread, continuously batched: arrivals join the running batch at the next
step, finished rows leave it. Its parts, one module each:

* the scheduling loop (``_scheduler``): the queue, who joins when, prefill chunk sizes;
* the model runner (``_runner``): the forward passes (prefill, decode, chunks riding in
  decode passes) over the paged key/value cache (``_kvcache``: a pool of blocks, rows
  holding lists of them; ``_paged``: one pass's writes and reads) and the prompts' prefix
  cache (:class:`PrefixCache`, blocks of the same pool shared by reference);
* static decode steps (``_static``): decode steps through preallocated buffers, bucketed,
  on CUDA a CUDA graph per bucket (``BatchEngine(static_decode=...)``);
* sampling (``_sampling``): grammar masks (:class:`GrammarFactory`), greedy and seeded
  draws as tensor operations (each row's draw from its seed and position),
  log-probabilities;
* stop handling (``_stopping``): incremental detokenizing, stop sequences, events;
* counters (:class:`EngineCounters`).

It needs torch and Transformers (the ``local`` extra), and nothing of agentplex's model
layer: callers give it token ids and receive text through :class:`GenerationEvent`.
Importing this package does not import torch. Plumbing for callers on an event loop
(:func:`~agentplex.engine.lowlevel.handoff_for`) is in :mod:`agentplex.engine.lowlevel`.
"""

from ._counters import EngineCounters
from ._errors import EngineClosed, EngineError, EngineOptionError, UnsupportedModel
from ._grammar import Constraint, GrammarFactory
from ._prefix import PrefixCache
from ._request import GenerationEvent, GenerationRequest, Sampling, TokenScore
from ._scheduler import BatchEngine

__all__ = [
    "BatchEngine",
    "Constraint",
    "EngineClosed",
    "EngineCounters",
    "EngineError",
    "EngineOptionError",
    "GenerationEvent",
    "GenerationRequest",
    "GrammarFactory",
    "PrefixCache",
    "Sampling",
    "TokenScore",
    "UnsupportedModel",
]
