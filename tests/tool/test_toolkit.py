"""Toolkit: registration, groups, validation and execution of every kind of tool."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, Iterator
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from agentplex.message import ImageBlock, TextBlock, ToolUseBlock
from agentplex.tool import META_TOOL, Tool, Toolkit, ToolResponse

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def call(name: str, call_id: str = "c1", **kwargs: Any) -> ToolUseBlock:
    return ToolUseBlock(id=call_id, name=name, input=kwargs)


def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


async def shout(text: str) -> str:
    """Shout text."""
    await asyncio.sleep(0)
    return text.upper()


def count(n: int) -> Iterator[str]:
    """Count to n, streaming."""
    for i in range(1, n + 1):
        yield " ".join(str(k) for k in range(1, i + 1))


async def progress(steps: int) -> AsyncGenerator[ToolResponse, None]:
    """Report progress."""
    for i in range(steps):
        await asyncio.sleep(0)
        yield ToolResponse(content=[TextBlock(text=f"{i + 1}/{steps}")])


def broken(x: int) -> int:
    """Always fails."""
    raise ValueError(f"cannot handle {x}")


async def slow() -> str:
    """Never finishes in time."""
    await asyncio.Event().wait()
    return "never"


async def fails_midway() -> AsyncGenerator[str, None]:
    """Streams, then fails."""
    yield "partial"
    raise RuntimeError("disk full")


async def collect(toolkit: Toolkit, block: ToolUseBlock) -> list[ToolResponse]:
    with anyio_timeout():
        return [chunk async for chunk in toolkit.call_tool_function(block)]


def anyio_timeout() -> Any:
    import anyio

    return anyio.fail_after(10)


@pytest.fixture
def toolkit() -> Toolkit:
    tk = Toolkit()
    for func in (add, shout, count, progress, broken, fails_midway):
        tk.register_tool_function(func)
    return tk


async def test_sync_and_async_functions(toolkit: Toolkit) -> None:
    result = await toolkit.execute(call("add", a=2, b=5))
    assert (result.id, result.name, result.output, result.is_error) == ("c1", "add", "7", False)
    assert (await toolkit.execute(call("add", a=2))).output == "3"
    assert (await toolkit.execute(call("shout", text="hi"))).output == "HI"


async def test_sync_generator_streams_results_so_far(toolkit: Toolkit) -> None:
    chunks = await collect(toolkit, call("count", n=3))
    assert [c.text for c in chunks] == ["1", "1 2", "1 2 3", "1 2 3"]
    assert [c.is_last for c in chunks] == [False, False, False, True]
    assert all(c.stream for c in chunks)


async def test_async_generator_streams(toolkit: Toolkit) -> None:
    chunks = await collect(toolkit, call("progress", steps=2))
    assert [c.text for c in chunks] == ["1/2", "2/2", "2/2"]
    assert chunks[-1].is_last and not chunks[0].is_last
    assert (await toolkit.execute(call("progress", steps=2))).output == "2/2"


async def test_validation_errors_reach_the_model_and_the_function_never_runs() -> None:
    ran: list[int] = []

    def record(n: int) -> str:
        """Record n."""
        ran.append(n)
        return "ok"

    tk = Toolkit()
    tk.register_tool_function(record)
    wrong_type = await tk.execute(call("record", n="many"))
    missing = await tk.execute(call("record"))
    extra = await tk.execute(call("record", n=1, m=2))
    for result in (wrong_type, missing, extra):
        assert result.is_error
        assert isinstance(result.output, str) and "invalid arguments for 'record'" in result.output
    assert "n: Input should be a valid integer" in str(wrong_type.output)
    assert "n: Field required" in str(missing.output)
    assert "m: Extra inputs are not permitted" in str(extra.output)
    assert ran == []
    assert (await tk.execute(call("record", n="4"))).output == "ok"  # lax coercion
    assert ran == [4]


async def test_raw_input_is_parsed_when_input_is_empty(toolkit: Toolkit) -> None:
    block = ToolUseBlock(id="r", name="add", input={}, raw_input='{"a": 40, "b": 2}')
    assert (await toolkit.execute(block)).output == "42"
    bad = ToolUseBlock(id="r", name="add", input={}, raw_input='{"a": 4')
    result = await toolkit.execute(bad)
    assert result.is_error and "not valid JSON" in str(result.output)


async def test_raising_tool_gives_an_error_result(toolkit: Toolkit) -> None:
    result = await toolkit.execute(call("broken", x=3))
    assert result.is_error
    assert result.output == "Error: ValueError: cannot handle 3"


async def test_error_midway_keeps_the_partial_output(toolkit: Toolkit) -> None:
    chunks = await collect(toolkit, call("fails_midway"))
    assert chunks[0].text == "partial" and not chunks[0].is_error
    assert chunks[-1].is_error and chunks[-1].is_last
    assert chunks[-1].text == "partial\nError: RuntimeError: disk full"


async def test_timeout_gives_an_error_result() -> None:
    tk = Toolkit(timeout=30)
    tk.register_tool_function(slow, timeout=0.05)
    with anyio_timeout():
        result = await tk.execute(call("slow"))
    assert result.is_error
    assert result.output == "Error: the tool 'slow' timed out after 0.05s."


async def test_a_tool_raising_its_own_timeout_error_is_not_reported_as_timed_out() -> None:
    async def own_timeout() -> str:
        """Raises TimeoutError itself."""
        raise TimeoutError("upstream took too long")

    tk = Toolkit(timeout=30)
    tk.register_tool_function(own_timeout)
    result = await tk.execute(call("own_timeout"))
    assert result.output == "Error: TimeoutError: upstream took too long"


async def test_unknown_tool(toolkit: Toolkit) -> None:
    result = await toolkit.execute(call("nope"))
    assert result.is_error and "no tool named 'nope'" in str(result.output)
    assert "add" in str(result.output)


async def test_groups_switch_tools_on_and_off(toolkit: Toolkit) -> None:
    toolkit.create_tool_group("web", "browsing", notes="Cite your sources.")
    toolkit.register_tool_function(shout, group_name="web", name="web_shout")
    names = [s["function"]["name"] for s in toolkit.get_json_schemas()]
    assert "web_shout" not in names and "add" in names
    inactive = await toolkit.execute(call("web_shout", text="x"))
    assert inactive.is_error and "inactive group 'web'" in str(inactive.output)
    assert toolkit.get_activated_notes() == ""

    toolkit.update_tool_groups(["web"], active=True)
    assert "web_shout" in [s["function"]["name"] for s in toolkit.get_json_schemas()]
    assert (await toolkit.execute(call("web_shout", text="x"))).output == "X"
    assert "Cite your sources." in toolkit.get_activated_notes()
    assert toolkit.state_dict() == {"active_groups": ["basic", "web"]}

    toolkit.update_tool_groups(["web", "basic"], active=False)
    assert toolkit.active_groups() == ["basic"]  # basic stays on
    toolkit.load_state_dict({"active_groups": ["basic", "web"]})
    assert toolkit.active_groups() == ["basic", "web"]
    with pytest.raises(KeyError):
        toolkit.load_state_dict({"active_groups": ["basic", "mail"]})
    toolkit.remove_tool_groups(["web"])
    assert "web_shout" not in toolkit.tools
    with pytest.raises(ValueError, match="no tool group"):
        toolkit.register_tool_function(add, group_name="web", name="add2")


async def test_preset_kwargs_are_hidden_and_passed() -> None:
    def fetch(url: str, api_key: str) -> str:
        """Fetch.

        Args:
            url: where
            api_key: secret
        """
        return f"{url} with {api_key}"

    tk = Toolkit()
    tk.register_tool_function(fetch, preset_kwargs={"api_key": "s3cret"})
    (schema,) = tk.get_json_schemas()
    assert "api_key" not in str(schema)
    assert (await tk.execute(call("fetch", url="u"))).output == "u with s3cret"
    rejected = await tk.execute(call("fetch", url="u", api_key="mine"))
    assert rejected.is_error  # the model cannot override a preset argument


async def test_explicit_json_schema_is_checked_with_json_schema() -> None:
    def raw(**kwargs: Any) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))

    schema = {"type": "function", "function": {
        "name": "raw", "description": "Raw.", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    tk = Toolkit()
    tk.register_tool_function(raw, json_schema=schema)
    assert tk.get_json_schemas() == [schema]
    assert (await tk.execute(call("raw", q="a"))).output == "q=a"
    bad = await tk.execute(call("raw", q=3))
    assert bad.is_error and "q: 3 is not of type 'string'" in str(bad.output)
    assert "'q' is a required property" in str((await tk.execute(call("raw"))).output)


async def test_duplicate_names_are_refused(toolkit: Toolkit) -> None:
    with pytest.raises(ValueError, match="already registered"):
        toolkit.register_tool_function(add)
    toolkit.remove_tool_function("add")
    toolkit.register_tool_function(add)


async def test_results_of_many_kinds() -> None:
    class Weather(BaseModel):
        temp: float

    def model_result() -> Weather:
        """A model."""
        return Weather(temp=21.5)

    def dict_result() -> dict[str, int]:
        """A dict."""
        return {"a": 1}

    def image_result() -> list[Any]:
        """Text and an image."""
        return [TextBlock(text="look"), ImageBlock(source={"type": "url", "url": "http://x/i.png"})]

    tk = Toolkit()
    for func in (model_result, dict_result, image_result):
        tk.register_tool_function(func)
    assert (await tk.execute(call("model_result"))).output == '{"temp":21.5}'
    assert (await tk.execute(call("dict_result"))).output == '{"a": 1}'
    mixed = (await tk.execute(call("image_result"))).output
    assert isinstance(mixed, list) and [b.type for b in mixed] == ["text", "image"]


class Captioner(Tool):
    """A tool with expensive setup and an image output."""

    name = "render"
    description = "Render a caption as an image."
    inputs: ClassVar[dict[str, dict[str, Any]] | None] = {
        "caption": {"type": "text", "description": "what to draw"},
        "size": {"type": "integer", "default": 8}}
    outputs: ClassVar[list[str]] = ["image"]

    def __init__(self) -> None:
        super().__init__()
        self.setups = 0

    async def setup(self) -> None:
        self.setups += 1

    def forward(self, caption: str, size: int = 8) -> bytes:
        assert self.is_initialized
        return PNG + caption.encode() + bytes([size])


async def test_tool_class_lazy_setup_and_media_output() -> None:
    tool = Captioner()
    tk = Toolkit()
    tk.register_tool_function(tool)
    (schema,) = tk.get_json_schemas()
    assert schema["function"]["name"] == "render"
    assert schema["function"]["description"] == "Render a caption as an image."
    assert schema["function"]["parameters"]["properties"]["caption"]["type"] == "string"
    assert schema["function"]["parameters"]["required"] == ["caption"]
    assert tool.setups == 0 and not tool.is_initialized

    first, second = await asyncio.gather(tk.execute(call("render", caption="hi")),
                                         tk.execute(call("render", "c2", caption="yo", size=2)))
    assert tool.setups == 1
    assert not second.is_error
    assert isinstance(first.output, list)
    (image,) = first.output
    assert isinstance(image, ImageBlock) and image.source.type == "base64"
    assert image.source.media_type == "image/png"
    assert base64.b64decode(image.source.data) == PNG + b"hi" + bytes([8])
    assert await tool(caption="a", size=1) == PNG + b"a" + bytes([1])
    bad = await tk.execute(call("render", size=3))
    assert bad.is_error and "'caption' is a required property" in str(bad.output)


async def test_tool_class_schema_from_forward_signature() -> None:
    class Lookup(Tool):
        name = "lookup"
        description = "Look a word up."

        async def forward(self, word: str, lang: str = "en") -> str:
            """Look up.

            Args:
                word: the word
                lang: the language
            """
            return f"{word}@{lang}"

    tk = Toolkit()
    tk.register_tool_function(Lookup())
    (schema,) = tk.get_json_schemas()
    assert schema["function"]["description"] == "Look a word up."
    assert schema["function"]["parameters"]["properties"]["word"]["description"] == "the word"
    assert (await tk.execute(call("lookup", word="hi"))).output == "hi@en"


async def test_sync_tools_run_off_the_event_loop() -> None:
    import threading

    def where() -> str:
        """Name the thread."""
        return threading.current_thread().name

    inline = Toolkit(run_sync_in_thread=False)
    inline.register_tool_function(where)
    threaded = Toolkit()
    threaded.register_tool_function(where)
    main = threading.current_thread().name
    assert (await inline.execute(call("where"))).output == main
    assert (await threaded.execute(call("where"))).output != main


async def test_the_agent_can_switch_groups_itself(toolkit: Toolkit) -> None:
    toolkit.create_tool_group("web", "search the web", notes="Cite sources.")
    toolkit.create_tool_group("files", "read files")
    toolkit.register_tool_function(shout, group_name="web", name="search")
    assert META_TOOL not in str(toolkit.get_json_schemas())
    toolkit.enable_group_switching()
    meta = toolkit.get_json_schemas()[-1]["function"]
    assert meta["name"] == META_TOOL
    assert set(meta["parameters"]["properties"]) == {"web", "files"}
    assert meta["parameters"]["properties"]["web"]["description"] == "search the web"

    result = await toolkit.execute(call(META_TOOL, web=True))
    assert result.output == "Active tool groups: web.\n\n## web\nCite sources."
    assert toolkit.active_groups() == ["basic", "web"]
    assert (await toolkit.execute(call("search", text="q"))).output == "Q"
    bad = await toolkit.execute(call(META_TOOL, mail=True))
    assert bad.is_error and toolkit.active_groups() == ["basic", "web"]
    assert (await toolkit.execute(call(META_TOOL))).output == "Active tool groups: none."
    assert toolkit.active_groups() == ["basic"]
