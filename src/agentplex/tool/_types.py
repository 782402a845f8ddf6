"""Agent types: text, images and audio passed between tools, agents and models.

:class:`AgentText`, :class:`AgentImage` and :class:`AgentAudio` (Transformers' agent types)
wrap what a tool returns. ``to_raw()`` gives the underlying object (a ``str``, a
``PIL.Image.Image``, a ``torch.Tensor``), ``to_string()`` a string (the text itself, or the
path of a file holding the serialized medium) and ``to_block()`` the content block a model
reads. :func:`media_block` turns anything a tool may return — a PIL image, a NumPy array, a
torch tensor, encoded bytes, audio with its sample rate — into such a block.

Arrays become PNG or WAV without Pillow or any audio library; only ``AgentImage.to_raw()``
needs Pillow and ``AgentAudio.to_raw()`` needs torch.
"""

from __future__ import annotations

import base64
import io
import struct
import tempfile
import uuid
import wave
import zlib
from functools import cache
from pathlib import Path
from typing import Any, TypeAlias

from ..message import AudioBlock, Base64Source, ImageBlock, TextBlock, URLSource, VideoBlock

__all__ = ["AgentAudio", "AgentImage", "AgentText", "AgentType", "media_block", "sniff_media"]

MediaBlock: TypeAlias = ImageBlock | AudioBlock | VideoBlock
_DEFAULT_MIME = {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}
_BLOCK_TYPES: dict[str, type[MediaBlock]] = {
    "image": ImageBlock, "audio": AudioBlock, "video": VideoBlock}
_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
           "image/webp": ".webp", "audio/wav": ".wav", "audio/mpeg": ".mp3",
           "audio/ogg": ".ogg", "audio/flac": ".flac", "video/mp4": ".mp4"}


class AgentType:
    """Base of the agent types: a value with ``to_raw()``, ``to_string()``, ``to_block()``."""

    def to_raw(self) -> Any:
        """The underlying object."""
        raise NotImplementedError

    def to_string(self) -> str:
        """A string standing for the object: text, or the path of its serialized file."""
        raise NotImplementedError

    def to_block(self) -> TextBlock | MediaBlock:
        """The content block a model reads."""
        raise NotImplementedError


class AgentText(AgentType, str):
    """Text returned by a tool; behaves as the ``str`` it is."""

    def to_raw(self) -> str:
        return str(self)

    def to_string(self) -> str:
        return str(self)

    def to_block(self) -> TextBlock:
        return TextBlock(text=str(self))


class _AgentMedia(AgentType):
    """Shared parts of images and audio: encoded bytes, a MIME type, a file on demand."""

    kind = "image"

    def __init__(self, data: bytes, mime: str) -> None:
        self.data = data
        self.mime = mime
        self._path: Path | None = None

    def to_string(self) -> str:
        """The path of a temporary file holding the encoded medium (written once)."""
        if self._path is None:
            path = _scratch_dir() / f"{uuid.uuid4().hex}{_SUFFIX.get(self.mime, '.bin')}"
            path.write_bytes(self.data)
            self._path = path
        return str(self._path)

    def to_block(self) -> MediaBlock:
        block = ImageBlock if self.kind == "image" else AudioBlock
        return block(source=Base64Source(media_type=self.mime,
                                         data=base64.b64encode(self.data).decode("ascii")))

    @classmethod
    def _encoded(cls, value: Any) -> tuple[bytes, str] | None:
        """``(bytes, mime)`` of a block, a path, encoded bytes or another agent type."""
        if isinstance(value, _AgentMedia):
            return value.data, value.mime
        if isinstance(value, (ImageBlock, AudioBlock, VideoBlock)):
            source = value.source
            if isinstance(source, URLSource):
                raise ValueError(f"{cls.__name__} needs inline media, not the URL {source.url!r}")
            return base64.b64decode(source.data), source.media_type
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            return data, sniff_media(data) or _DEFAULT_MIME[cls.kind]
        if isinstance(value, (str, Path)):
            data = Path(value).read_bytes()
            return data, sniff_media(data) or _DEFAULT_MIME[cls.kind]
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mime}, {len(self.data)} bytes)"


class AgentImage(_AgentMedia):
    """An image returned by a tool.

    Built from a PIL image, a NumPy array or torch tensor (``HxW``, ``HxWxC`` or
    ``CxHxW``; ``uint8``, or floats in ``[0, 1]``), encoded bytes, a file path or an
    :class:`~agentplex.message.ImageBlock`. ``to_raw()`` is a ``PIL.Image.Image``.
    """

    kind = "image"

    def __init__(self, value: Any) -> None:
        encoded = self._encoded(value)
        if encoded is None:
            encoded = _image_bytes(value)
        super().__init__(*encoded)

    def to_raw(self) -> Any:
        """The image as a ``PIL.Image.Image`` (needs Pillow)."""
        try:
            from PIL import Image
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("AgentImage.to_raw() needs Pillow: pip install pillow") from exc
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def _repr_png_(self) -> bytes | None:
        return self.data if self.mime == "image/png" else None


class AgentAudio(_AgentMedia):
    """Audio returned by a tool, with its sample rate.

    Built from a NumPy array or torch tensor of samples (1-D mono, or ``channelsxsamples``;
    floats in ``[-1, 1]`` or ``int16``) at ``samplerate``, a ``(samplerate, array)`` pair,
    encoded bytes (WAV, MP3, ...), a file path or an
    :class:`~agentplex.message.AudioBlock`. ``to_raw()`` is a ``torch.Tensor`` of float
    samples (WAV only).
    """

    kind = "audio"

    def __init__(self, value: Any, samplerate: int = 16000) -> None:
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
            samplerate, value = value
        encoded = self._encoded(value)
        if encoded is None:
            encoded = (_wav_bytes(value, samplerate), "audio/wav")
        super().__init__(*encoded)
        self.samplerate = samplerate
        if self.mime == "audio/wav":
            with wave.open(io.BytesIO(self.data)) as wav:
                self.samplerate = wav.getframerate()

    def to_numpy(self) -> Any:
        """The samples as a float32 NumPy array (``samples`` or ``channelsxsamples``)."""
        import numpy as np

        if self.mime != "audio/wav":
            raise ValueError(f"only WAV audio can be decoded here, not {self.mime}")
        with wave.open(io.BytesIO(self.data)) as wav:
            width, channels = wav.getsampwidth(), wav.getnchannels()
            frames = wav.readframes(wav.getnframes())
        dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
        ints = np.frombuffer(frames, dtype=dtype).astype(np.float32)
        scaled = (ints - 128) / 128 if width == 1 else ints / float(2 ** (8 * width - 1))
        samples = scaled.astype(np.float32)
        return samples if channels == 1 else samples.reshape(-1, channels).T.copy()

    def to_raw(self) -> Any:
        """The samples as a ``torch.Tensor`` (as in Transformers; needs torch)."""
        import torch

        return torch.from_numpy(self.to_numpy())

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.data).decode("ascii")
        return f'<audio controls src="data:{self.mime};base64,{data}"></audio>'

    def __repr__(self) -> str:
        return f"AgentAudio({self.mime}, {self.samplerate} Hz, {len(self.data)} bytes)"


def sniff_media(data: bytes) -> str | None:
    """The MIME type of encoded media recognised by its first bytes, or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith((b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")):
        return "audio/mpeg"
    if data.startswith(b"OggS"):
        return "audio/ogg"
    if data.startswith(b"fLaC"):
        return "audio/flac"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return None


def media_block(value: Any, media: str | None = None, samplerate: int = 16000
                ) -> MediaBlock | None:
    """The media block for ``value``, or ``None`` when it is not media.

    Agent types and PIL images are always media; dicts with ``sampling_rate`` (the
    Transformers audio pipelines' output) are audio. Arrays and tensors are media only when
    ``media`` (the tool's declared output) says which; encoded bytes when ``media`` says so
    or their first bytes are recognised.
    """
    if isinstance(value, AgentText):
        return None
    if isinstance(value, _AgentMedia):
        return value.to_block()
    if _is_pil(value):
        return AgentImage(value).to_block()
    if isinstance(value, dict) and "sampling_rate" in value:
        samples = value.get("audio", value.get("array"))
        if samples is not None:
            return AgentAudio(samples, int(value["sampling_rate"])).to_block()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        mime = sniff_media(data)
        kind = media or (mime.split("/")[0] if mime else None)
        if kind not in _DEFAULT_MIME:
            return None
        block: type[MediaBlock] = _BLOCK_TYPES[kind]
        return block(source=Base64Source(media_type=mime or _DEFAULT_MIME[kind],
                                         data=base64.b64encode(data).decode("ascii")))
    if media == "audio" and isinstance(value, tuple) and len(value) == 2:
        rate, samples = value if isinstance(value[0], int) else value[::-1]
        if isinstance(rate, int) and is_array(samples):
            return AgentAudio(samples, rate).to_block()
    if is_array(value):
        if media == "image":
            return AgentImage(value).to_block()
        if media == "audio":
            return AgentAudio(value, samplerate).to_block()
    return None


def is_array(value: Any) -> bool:
    """Whether ``value`` is a NumPy array or a torch tensor (without importing either)."""
    module = type(value).__module__
    return (module == "numpy" and hasattr(value, "__array__")) or (
        module.startswith("torch") and hasattr(value, "detach"))


def as_numpy(value: Any) -> Any:
    """A NumPy array of ``value`` (a tensor is detached and moved to the CPU)."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def _image_bytes(value: Any) -> tuple[bytes, str]:
    if _is_pil(value):
        out = io.BytesIO()
        value.save(out, format="PNG")
        return out.getvalue(), "image/png"
    if not is_array(value):
        raise TypeError(f"cannot make an image of {type(value).__name__}; pass a PIL image, "
                        "an array or tensor, encoded bytes, a path or an ImageBlock")
    import numpy as np

    pixels = as_numpy(value)
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3, 4) and pixels.shape[-1] not in (1, 3, 4):
        pixels = pixels.transpose(1, 2, 0)  # CxHxW (torch) → HxWxC
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be HxW, HxWxC or CxHxW with 1, 3 or 4 "
                         f"channels, not of shape {pixels.shape}")
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype.kind == "f":
        pixels = (np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255).round().astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return _png(np.ascontiguousarray(pixels)), "image/png"


def _png(pixels: Any) -> bytes:
    """Encode a ``uint8`` HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) array as PNG."""
    height, width = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else {3: 2, 4: 6}[pixels.shape[2]]  # grey, RGB, RGBA
    rows = pixels.reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _wav_bytes(value: Any, samplerate: int) -> bytes:
    if not is_array(value) and not isinstance(value, (list, tuple)):
        raise TypeError(f"cannot make audio of {type(value).__name__}; pass an array or "
                        "tensor of samples, encoded bytes, a path or an AudioBlock")
    if samplerate <= 0:
        raise ValueError(f"a sample rate must be positive, not {samplerate}")
    import numpy as np

    samples = as_numpy(value)
    if samples.ndim == 2 and samples.shape[0] > samples.shape[1]:
        samples = samples.T  # samplesxchannels → channelsxsamples
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples[0]
    if samples.ndim not in (1, 2):
        raise ValueError(f"audio must be 1-D or channelsxsamples, not of shape {samples.shape}")
    if samples.dtype.kind == "f":
        pcm = (np.clip(np.nan_to_num(samples), -1.0, 1.0) * 32767).round().astype("<i2")
    else:
        pcm = samples.astype("<i2")
    channels = 1 if pcm.ndim == 1 else pcm.shape[0]
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(int(samplerate))
        wav.writeframes(np.ascontiguousarray(pcm.T if pcm.ndim == 2 else pcm).tobytes())
    return out.getvalue()


@cache
def _scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="agentplex-media-"))
