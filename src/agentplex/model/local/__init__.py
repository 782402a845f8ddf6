"""The local engine behind :class:`TransformersChatModel`.

Four parts, one module each: loading models offline (with the GGUF → safetensors cache),
the batching engine (one decode loop for every concurrent request of a model), output
parsing (``<think>`` sections and ``<tool_call>`` calls into blocks) and grammars
(constrained decoding with xgrammar). Importing this package does not import torch; loading
a model does.
"""

from .._errors import ModelNotAvailableError
from ._chat_model import TransformersChatModel, create
from ._engine import BatchEngine, GenerationEvent, GenerationRequest, Sampling
from ._grammars import (
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    Constraint,
    GrammarFactory,
    constraint_from_format,
    tool_constraint,
)
from ._loading import DEFAULT_MODEL, LoadedModel, cache_root, embedded_gguf, load_local_model
from ._mlx import MLXChatModel
from ._output import THINK_BEGIN, THINK_END, OutputAssembler, split_output

__all__ = [
    "BatchEngine",
    "Constraint",
    "DEFAULT_MODEL",
    "GenerationEvent",
    "GenerationRequest",
    "GrammarFactory",
    "LoadedModel",
    "MLXChatModel",
    "ModelNotAvailableError",
    "OutputAssembler",
    "Sampling",
    "THINK_BEGIN",
    "THINK_END",
    "TOOL_CALL_BEGIN",
    "TOOL_CALL_END",
    "TransformersChatModel",
    "cache_root",
    "constraint_from_format",
    "create",
    "embedded_gguf",
    "load_local_model",
    "split_output",
    "tool_constraint",
]
