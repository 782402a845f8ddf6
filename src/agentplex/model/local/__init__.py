"""The local chat models: :class:`TransformersChatModel` and :class:`MLXChatModel`.

What a local provider adds to the engine (:mod:`agentplex.engine`, which decodes): loading
models offline (with the GGUF → safetensors cache), chat history as chat templates take it,
constraints read from a call's arguments (``response_format``, tools), and output parsing
(``<think>`` sections and ``<tool_call>`` calls into blocks). Importing this package does not
import torch; loading a model does.

The engine's names that used to be imported from here (``BatchEngine``, ``GenerationEvent``,
``GenerationRequest``, ``Sampling``, ``Constraint``, ``GrammarFactory``) are
:mod:`agentplex.engine`'s.
"""

from .._errors import ModelNotAvailableError
from ._chat_model import TransformersChatModel, create
from ._constraints import TOOL_CALL_BEGIN, TOOL_CALL_END, constraint_from_format, tool_constraint
from ._loading import DEFAULT_MODEL, LoadedModel, cache_root, embedded_gguf, load_local_model
from ._mlx import MLXChatModel
from ._output import THINK_BEGIN, THINK_END, OutputAssembler, split_output
from ._quantize import QUANTIZATIONS, quantize_model

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "MLXChatModel",
    "ModelNotAvailableError",
    "OutputAssembler",
    "QUANTIZATIONS",
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
    "quantize_model",
    "split_output",
    "tool_constraint",
]
