"""MLXChatModel on the tiny trained Llama (mlx-cpu on Linux): text, streaming, stops,
generation arguments, tools in the prompt, structured output, token counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentplex.model import UnsupportedOptionError, init_chat_model
from tests.support.tiny_llama import EXAMPLES

pytest.importorskip("mlx_lm", reason="the mlx extra is not installed")
pytestmark = pytest.mark.anyio

COUNT = EXAMPLES[2][0]
TEN = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def mlx_model(tiny_folder: Path) -> Any:
    return init_chat_model(f"mlx:{tiny_folder}", max_tokens=40)


async def test_text_and_usage(mlx_model: Any) -> None:
    response = await mlx_model(COUNT)
    assert response.text == TEN and response.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.input_tokens == await mlx_model.count_tokens(COUNT)
    assert response.usage.output_tokens > 0


async def test_streaming_and_stop_sequences(mlx_model: Any) -> None:
    chunks = [c async for c in await mlx_model(COUNT, stream=True, stop="five")]
    assert chunks[-1].is_last and chunks[-1].text == "one two three four "
    assert len(chunks) > 2 and all("five" not in c.text for c in chunks)
    assert chunks[-1].finish_reason == "stop"


async def test_generation_arguments(mlx_model: Any) -> None:
    capped = await mlx_model(COUNT, max_new_tokens=2)
    assert capped.finish_reason == "length" and capped.usage.output_tokens == 2
    sampled = [await mlx_model(COUNT, temperature=1.5, top_k=50, seed=s, max_tokens=8)
               for s in (1, 1)]
    assert sampled[0].text == sampled[1].text  # a seed makes sampling repeatable
    with pytest.raises(UnsupportedOptionError, match="presence_penalty"):
        await mlx_model(COUNT, presence_penalty=0.5)
    with pytest.raises(UnsupportedOptionError, match="force"):
        await mlx_model(COUNT, tools=[{"type": "function", "function": {"name": "f"}}],
                        tool_choice="required")
