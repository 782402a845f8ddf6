"""Tool return values become media blocks, cross the wire intact and reach every formatter."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from agentplex.message import (
    AudioBlock,
    ImageBlock,
    Msg,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    decode,
    encode,
)
from agentplex.model import UnsupportedOptionError
from agentplex.model.anthropic import format_anthropic_messages
from agentplex.model.dashscope import format_dashscope_messages
from agentplex.model.gemini import format_gemini_contents
from agentplex.model.local._chat_format import to_chat
from agentplex.model.ollama import format_ollama_messages
from agentplex.model.openai import format_openai_messages
from agentplex.tool import AgentAudio, AgentImage, AgentText, Tool, Toolkit
from agentplex.tool.lowlevel import media_block, to_tool_response

pytestmark = pytest.mark.anyio

RGB = np.zeros((4, 6, 3), dtype=np.uint8)
RGB[1, 2] = (255, 10, 20)
TONE = (0.5 * np.sin(np.linspace(0, 40 * np.pi, 800))).astype(np.float32)


def _image_of(block: Any) -> np.ndarray:
    assert isinstance(block, ImageBlock) and block.source.type == "base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(block.source.data))))


def _samples_of(block: Any) -> tuple[np.ndarray, int]:
    assert isinstance(block, AudioBlock) and block.source.type == "base64"
    assert block.source.media_type == "audio/wav"
    audio = AgentAudio(block)
    return audio.to_numpy(), audio.samplerate


# -- the agent types ------------------------------------------------------------------------

def test_agent_text_is_a_string() -> None:
    text = AgentText("hello")
    assert text == "hello" and text.to_raw() == "hello" and text.to_string() == "hello"
    assert text.to_block() == TextBlock(text="hello")


def test_agent_image_from_arrays_tensors_and_pil() -> None:
    from_array = AgentImage(RGB)
    assert np.array_equal(np.asarray(from_array.to_raw()), RGB)
    chw = torch.from_numpy(RGB).permute(2, 0, 1).float() / 255
    assert np.array_equal(np.asarray(AgentImage(chw).to_raw()), RGB)
    from_pil = AgentImage(Image.fromarray(RGB))
    assert np.array_equal(np.asarray(from_pil.to_raw()), RGB)
    path = Path(from_pil.to_string())
    assert path.suffix == ".png" and path.read_bytes() == from_pil.data
    assert AgentImage(path).data == from_pil.data  # back from the file
    grey = AgentImage(np.full((3, 3), 0.5))
    assert np.asarray(grey.to_raw()).tolist() == [[128] * 3] * 3
    with pytest.raises(ValueError, match="shape"):
        AgentImage(np.zeros((2, 2, 2, 2)))
    with pytest.raises(TypeError, match="cannot make an image"):
        AgentImage(3.5)


def test_agent_audio_keeps_its_samples_and_rate() -> None:
    audio = AgentAudio(TONE, samplerate=8000)
    raw = audio.to_raw()
    assert isinstance(raw, torch.Tensor) and raw.shape == (800,)
    assert np.allclose(raw.numpy(), TONE, atol=1e-4)
    assert audio.samplerate == 8000
    with wave.open(audio.to_string()) as wav:
        assert wav.getframerate() == 8000 and wav.getnframes() == 800
    pair = AgentAudio((22050, torch.from_numpy(TONE)))
    assert pair.samplerate == 22050
    stereo = AgentAudio(np.stack([TONE, -TONE]), samplerate=8000).to_numpy()
    assert stereo.shape == (2, 800) and np.allclose(stereo[1], -TONE, atol=1e-4)
    assert AgentAudio(audio.to_block()).samplerate == 8000


# -- tool return values ---------------------------------------------------------------------

def test_return_values_become_the_right_blocks() -> None:
    pil = to_tool_response(Image.fromarray(RGB)).content[0]
    assert np.array_equal(_image_of(pil), RGB)
    declared = to_tool_response(RGB, media="image").content[0]
    assert np.array_equal(_image_of(declared), RGB)
    tensor = to_tool_response(torch.from_numpy(TONE), media="audio", samplerate=8000).content[0]
    samples, rate = _samples_of(tensor)
    assert rate == 8000 and np.allclose(samples, TONE, atol=1e-4)
    pipeline_out = to_tool_response({"audio": TONE, "sampling_rate": 24000}).content[0]
    assert _samples_of(pipeline_out)[1] == 24000
    pair = to_tool_response((16000, TONE), media="audio").content[0]
    assert _samples_of(pair)[1] == 16000
    png = AgentImage(RGB).data
    sniffed = to_tool_response(png).content[0]
    assert isinstance(sniffed, ImageBlock) and sniffed.source.type == "base64"
    assert sniffed.source.media_type == "image/png"  # sniffed
    jpeg_as_declared = to_tool_response(b"\x00raw", media="video").content[0]
    assert jpeg_as_declared.type == "video"
    mixed = to_tool_response(("a caption", AgentImage(RGB))).content
    assert [b.type for b in mixed] == ["text", "image"]


def test_undeclared_arrays_are_text() -> None:
    assert to_tool_response(np.arange(3)).text == "[0, 1, 2]"
    big = to_tool_response(torch.zeros(100, 100)).text
    assert big.startswith("array of shape [100, 100] and dtype float32")
    assert media_block(np.arange(3)) is None
    assert to_tool_response(b"not media").content[0].type == "text"


class Painter(Tool):
    name = "paint"
    description = "Paint a picture."
    inputs: ClassVar[list[str]] = ["text"]
    outputs: ClassVar[list[str]] = ["image"]

    def forward(self, prompt):  # type: ignore[no-untyped-def]
        """Args:
            prompt: what to paint.
        """
        return torch.from_numpy(RGB).permute(2, 0, 1)


class Speaker(Tool):
    name = "speak"
    description = "Read text aloud."
    inputs: ClassVar[dict[str, dict[str, Any]]] = {"text": {"type": "text"}}
    outputs: ClassVar[list[str]] = ["audio"]
    samplerate: ClassVar[int] = 8000

    def forward(self, text: str) -> np.ndarray:
        return TONE


async def _results() -> list[ToolResultBlock]:
    toolkit = Toolkit()
    toolkit.register_tool_function(Painter())
    toolkit.register_tool_function(Speaker())
    return [await toolkit.execute(ToolUseBlock(id="c1", name="paint", input={"prompt": "x"})),
            await toolkit.execute(ToolUseBlock(id="c2", name="speak", input={"text": "hi"}))]


async def test_toolkit_results_carry_the_media() -> None:
    image, audio = await _results()
    assert not image.is_error and not audio.is_error
    assert np.array_equal(_image_of(image.output[0]), RGB)
    assert _samples_of(audio.output[0])[1] == 8000


async def test_media_results_cross_the_wire_as_raw_bytes() -> None:
    image, audio = await _results()
    msg = Msg("system", [image, audio], "system")
    payload = encode(msg)
    png = AgentImage(image.output[0]).data
    assert png in payload  # raw bytes, not base64 text
    first = image.output[0]
    assert isinstance(first, ImageBlock) and first.source.type == "base64"
    assert first.source.data not in payload.decode("latin-1")
    back = decode(payload)
    assert back == msg
    assert np.array_equal(_image_of(back.content[0].output[0]), RGB)


def _history(result: ToolResultBlock) -> list[Msg]:
    return [Msg("user", "do it", "user"),
            Msg("bot", [ToolUseBlock(id=result.id, name=result.name, input={})], "assistant"),
            Msg("system", [result], "system")]


async def test_every_formatter_gets_the_image() -> None:
    image, _ = await _results()
    png = AgentImage(image.output[0]).data
    b64 = base64.b64encode(png).decode()
    openai = format_openai_messages(_history(image))
    assert openai[-1]["content"][1]["image_url"]["url"] == f"data:image/png;base64,{b64}"
    _, anthropic = format_anthropic_messages(_history(image))
    result = anthropic[-1]["content"][0]
    assert result["type"] == "tool_result" and result["content"][0]["source"]["data"] == b64
    _, gemini = format_gemini_contents(_history(image))
    assert gemini[-1]["parts"][-1]["inline_data"] == {"mime_type": "image/png", "data": png}
    dashscope = format_dashscope_messages(_history(image), multimodal=True)
    assert dashscope[-1]["content"][1]["image"] == f"data:image/png;base64,{b64}"
    ollama = format_ollama_messages(_history(image))
    assert ollama[-1]["images"] == [b64]


async def test_audio_reaches_the_formatters_that_take_it_and_others_refuse() -> None:
    _, audio = await _results()
    wav = AgentAudio(audio.output[0]).data
    openai = format_openai_messages(_history(audio))
    assert openai[-1]["content"][1]["input_audio"] == {
        "data": base64.b64encode(wav).decode(), "format": "wav"}
    _, gemini = format_gemini_contents(_history(audio))
    assert gemini[-1]["parts"][-1]["inline_data"] == {"mime_type": "audio/wav", "data": wav}
    dashscope = format_dashscope_messages(_history(audio), multimodal=True)
    assert dashscope[-1]["content"][1]["audio"].startswith("data:audio/wav;base64,")
    with pytest.raises(UnsupportedOptionError, match="audio"):
        format_anthropic_messages(_history(audio))
    with pytest.raises(UnsupportedOptionError, match="audio"):
        format_ollama_messages(_history(audio))


async def test_a_text_only_local_model_refuses_media_results() -> None:
    image, _ = await _results()
    with pytest.raises(UnsupportedOptionError, match="image"):
        to_chat(_history(image)[-1])
