"""Tools over Transformers models: :class:`PipelineTool` and :func:`pipeline_tool`.

Both load their model lazily, in :meth:`~agentplex.tool.Tool.setup` run in a worker thread
on first use, and run the model off the event loop, one call at a time per loaded model.
To share one loaded model among many agents, host the tool in a
:class:`~agentplex.cluster.ToolActor` (placed on a GPU node by the scheduler).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from ._tool import Tool

__all__ = ["PipelineTool", "TransformersPipelineTool", "pipeline_tool"]


def _resolve_device(device: Any) -> Any:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class PipelineTool(Tool):
    """A tool made of a Transformers model and its processors (Transformers'
    ``PipelineTool``): ``encode`` the raw inputs, ``forward`` them through the model,
    ``decode`` the outputs.

    Subclasses set ``model_class`` (e.g. ``AutoModelForSequenceClassification``) and
    ``default_checkpoint``, and may set ``pre_processor_class`` / ``post_processor_class``
    (default ``AutoProcessor``; the post-processor defaults to the pre-processor). The
    model's inputs are ``encode``'s parameters unless ``inputs`` says otherwise.

    Args:
        model: a checkpoint (local folder or hub name) or a loaded model (default:
            ``default_checkpoint``).
        pre_processor: a checkpoint or an instance (default: ``model``'s checkpoint).
        post_processor: a checkpoint or an instance (default: the pre-processor).
        device: where the model runs (default: CUDA when available, else the CPU).
        device_map: passed to ``from_pretrained`` instead of moving the model to
            ``device`` (e.g. ``"auto"`` to spread a large model over the GPUs).
        model_kwargs: more keyword arguments for ``from_pretrained`` of the model.
        token: the hub token for private checkpoints.
        hub_kwargs: more keyword arguments for every ``from_pretrained`` (``revision``,
            ``cache_dir``, ``local_files_only`` ...).
    """

    model_class: ClassVar[Any] = None
    pre_processor_class: ClassVar[Any] = None
    post_processor_class: ClassVar[Any] = None
    default_checkpoint: ClassVar[str | None] = None
    blocking: ClassVar[bool] = True

    def __init__(self, model: Any = None, pre_processor: Any = None, post_processor: Any = None,
                 device: Any = None, device_map: Any = None,
                 model_kwargs: dict[str, Any] | None = None, token: str | None = None,
                 **hub_kwargs: Any) -> None:
        super().__init__()
        if model is None:
            if self.default_checkpoint is None:
                raise ValueError(f"{type(self).__name__} needs a model: pass one or set "
                                 "default_checkpoint")
            model = self.default_checkpoint
        self.model = model
        self.pre_processor = model if pre_processor is None else pre_processor
        self.post_processor = post_processor
        self.device = device
        self.device_map = device_map
        self.model_kwargs = dict(model_kwargs or {})
        self.hub_kwargs = dict(hub_kwargs)
        if token is not None:
            self.hub_kwargs["token"] = token
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load the processors and the model (run once, in a worker thread)."""
        from transformers import AutoProcessor

        if isinstance(self.pre_processor, str):
            cls = self.pre_processor_class or AutoProcessor
            self.pre_processor = cls.from_pretrained(self.pre_processor, **self.hub_kwargs)
        if isinstance(self.model, str):
            if self.model_class is None:
                raise TypeError(f"{type(self).__name__} must set model_class to load "
                                f"{self.model!r}")
            kwargs = {**self.model_kwargs, **self.hub_kwargs}
            if self.device_map is not None:
                kwargs["device_map"] = self.device_map
            self.model = self.model_class.from_pretrained(self.model, **kwargs)
        if self.post_processor is None:
            self.post_processor = self.pre_processor
        elif isinstance(self.post_processor, str):
            cls = self.post_processor_class or AutoProcessor
            self.post_processor = cls.from_pretrained(self.post_processor, **self.hub_kwargs)
        if self.device_map is None:
            self.device = _resolve_device(self.device)
            self.model.to(self.device)
        else:
            self.device = getattr(self.model, "device", self.device)
        self.model.eval()

    def encode(self, raw_inputs: Any) -> Any:
        """Prepare the inputs for the model with the pre-processor."""
        return self.pre_processor(raw_inputs)

    def forward(self, inputs: Any) -> Any:
        """Run the model on ``encode``'s output (without gradients)."""
        import torch

        with torch.no_grad():
            return self.model(**inputs)

    def decode(self, outputs: Any) -> Any:
        """Turn the model's outputs into the tool's result with the post-processor."""
        return self.post_processor(outputs)

    def entry_point(self) -> Callable[..., Any]:
        return self._run

    def _schema_source(self) -> Callable[..., Any]:
        return self.encode

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:  # one model, one call at a time
            encoded = self.encode(*args, **kwargs)
            encoded = _to_device(encoded, self.device)
            return self.decode(self.forward(encoded))


class TransformersPipelineTool(Tool):
    """A tool over ``transformers.pipeline(task, model=...)``; see :func:`pipeline_tool`."""

    blocking: ClassVar[bool] = True

    def __init__(self, task: str, model: Any = None, *, name: str | None = None,
                 description: str | None = None, device: Any = None, device_map: Any = None,
                 model_kwargs: dict[str, Any] | None = None, call_kwargs: dict[str, Any] |
                 None = None, **pipeline_kwargs: Any) -> None:
        super().__init__()
        self.task = task
        self.model = model
        self.device = device
        self.device_map = device_map
        self.model_kwargs = dict(model_kwargs or {})
        self.call_kwargs = dict(call_kwargs or {})
        self.pipeline_kwargs = pipeline_kwargs
        self.pipeline: Any = None
        self.loads = 0
        """How many times the pipeline was loaded (once, when shared)."""
        spec = _TASK_INPUTS.get(task, _DEFAULT_INPUTS)
        self.name = name or task.replace("-", "_")  # type: ignore[misc]
        self.description = description or (  # type: ignore[misc]
            f"Runs the Hugging Face '{task}' pipeline"
            + (f" ({model})" if isinstance(model, str) else "") + ".")
        self.inputs = {k: dict(v) for k, v in spec[0].items()}  # type: ignore[misc]
        self.outputs = [spec[1]]  # type: ignore[misc]
        self._positional = spec[2]
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Build the pipeline (run once, in a worker thread)."""
        from transformers import pipeline

        kwargs: dict[str, Any] = dict(self.pipeline_kwargs)
        model = self.model
        if isinstance(model, str) and _embedded_or_gguf(model):
            from ..model.local import load_local_model

            loaded = load_local_model(model, device_map=self.device_map,
                                      model_kwargs=self.model_kwargs)
            model, kwargs["tokenizer"] = loaded.model, loaded.tokenizer
        elif self.model_kwargs:
            kwargs["model_kwargs"] = self.model_kwargs
        if self.device_map is not None:
            if not kwargs.get("tokenizer"):
                kwargs["device_map"] = self.device_map
        else:
            kwargs["device"] = _resolve_device(self.device)
        build: Any = pipeline  # its overloads are per literal task name
        self.pipeline = build(self.task, model=model, **kwargs)
        self.loads += 1

    def forward(self, **inputs: Any) -> Any:
        with self._lock:
            first = next(iter(self.inputs or {"inputs": {}}))
            args = [inputs.pop(first)] if self._positional and first in inputs else []
            return self.pipeline(*args, **inputs, **self.call_kwargs)


def pipeline_tool(task: str, model: Any = None, *, name: str | None = None,
                  description: str | None = None, device: Any = None, device_map: Any = None,
                  model_kwargs: dict[str, Any] | None = None,
                  call_kwargs: dict[str, Any] | None = None,
                  **pipeline_kwargs: Any) -> TransformersPipelineTool:
    """A tool running ``transformers.pipeline(task, model=model, ...)``.

    The pipeline is built on first use (in a worker thread) and runs off the event loop.
    The tool's inputs follow the task: ``text``; ``image`` or ``audio`` (a path or URL)
    for vision and speech tasks; plus ``candidate_labels`` for the zero-shot tasks and
    ``question`` for document question answering. Text-to-audio results come back as
    audio, images as images. ``model="default"`` (or a ``.gguf`` file) is loaded by the
    local model layer: the embedded SmolLM2, converted once and cached. ``call_kwargs`` go to
    every pipeline call, ``pipeline_kwargs`` to ``transformers.pipeline``.
    """
    return TransformersPipelineTool(task, model, name=name, description=description,
                                    device=device, device_map=device_map,
                                    model_kwargs=model_kwargs, call_kwargs=call_kwargs,
                                    **pipeline_kwargs)


def _embedded_or_gguf(model: str) -> bool:
    """``default`` (the embedded SmolLM2) or a GGUF file: loaded by the local model layer."""
    from ..model.local import DEFAULT_MODEL

    return model.strip().lower() in ("default", "smollm2", DEFAULT_MODEL.lower()) or (
        model.endswith(".gguf"))


def _to_device(value: Any, device: Any) -> Any:
    """Move encoded inputs (a ``BatchEncoding``, a tensor or a dict of them) to ``device``."""
    if device is None:
        return value
    if isinstance(value, dict) and not hasattr(value, "to"):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value.to(device) if callable(getattr(value, "to", None)) else value


_TEXT = {"text": {"type": "string", "description": "the input text"}}
_IMAGE = {"image": {"type": "string", "description": "the image's path or URL"}}
_AUDIO = {"audio": {"type": "string", "description": "the audio file's path or URL"}}
_LABELS = {"candidate_labels": {"type": "array", "items": {"type": "string"},
                                "description": "the labels to choose from"}}
_QUESTION = {"question": {"type": "string", "description": "the question"}}
_DEFAULT_INPUTS: tuple[dict[str, dict[str, Any]], str, bool] = (_TEXT, "text", True)
_TASK_INPUTS: dict[str, tuple[dict[str, dict[str, Any]], str, bool]] = {
    # (inputs, output medium, whether the first input is passed positionally)
    "zero-shot-classification": ({**_TEXT, **_LABELS}, "text", True),
    "zero-shot-image-classification": ({**_IMAGE, **_LABELS}, "text", True),
    "zero-shot-audio-classification": ({**_AUDIO, **_LABELS}, "text", True),
    "document-question-answering": ({**_IMAGE, **_QUESTION}, "text", True),
    "question-answering": ({**_QUESTION, "context": {
        "type": "string", "description": "the text holding the answer"}}, "text", False),
    "table-question-answering": ({"table": {"type": "object", "description": "column name "
                                            "to list of cells"},
                                  "query": {"type": "string", "description": "the question"}},
                                 "text", False),
    "text-to-audio": (_TEXT, "audio", True),
    "text-to-speech": (_TEXT, "audio", True),
    **{task: (_IMAGE, "text", True)
       for task in ("image-classification", "image-to-text", "object-detection",
                    "image-segmentation", "depth-estimation", "image-feature-extraction")},
    **{task: (_AUDIO, "text", True)
       for task in ("automatic-speech-recognition", "audio-classification")},
}
