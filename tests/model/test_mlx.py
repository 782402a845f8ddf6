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


@pytest.fixture(scope="module")
def mlx_model(tiny_folder: Path) -> Any:
    return init_chat_model(f"mlx:{tiny_folder}", max_tokens=40)


async def test_text_and_usage(mlx_model: Any) -> None:
    # Greedy MLX output of the tiny model is not the Transformers engine's word for word
    # (it starts "one"/"onr three four ..."), so the checks are on what must hold anyway.
    response = await mlx_model(COUNT)
    again = await mlx_model(COUNT)
    assert response.text and response.text == again.text  # greedy: repeatable
    assert response.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert response.usage.input_tokens == await mlx_model.count_tokens(COUNT)
    assert response.usage.output_tokens > 0


async def test_streaming_and_stop_sequences(mlx_model: Any) -> None:
    whole = (await mlx_model(COUNT)).text
    chunks = [c async for c in await mlx_model(COUNT, stream=True)]
    assert chunks[-1].is_last and chunks[-1].text == whole and len(chunks) > 2
    assert "".join(b.text for c in chunks for b in c.delta if hasattr(b, "text")) == whole
    stop = whole.split()[2]
    cut = [c async for c in await mlx_model(COUNT, stream=True, stop=stop)]
    assert cut[-1].text == whole[:whole.index(stop)] and cut[-1].finish_reason == "stop"
    assert all(stop not in c.text for c in cut)


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
