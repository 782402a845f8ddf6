""":class:`CodeAgent`: the model acts by writing Python that calls the tools.

As smolagents' ``CodeAgent`` and Transformers' ``HfAgent`` / ``LocalAgent``: each step the
model writes a thought and a code block; the code runs in a :class:`PythonSandbox` (a
separate, limited process), its tool calls come back to this agent's :class:`Toolkit`, and
what it printed (or its error) is the next observation. ``final_answer(x)`` ends the task.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..message import AudioBlock, ImageBlock, Msg, TextBlock, ToolUseBlock, VideoBlock
from ..model import ChatModelBase, ChatResponse, collect
from ..tool import Tool, Toolkit, ToolResponse
from ._agent import AgentBase
from ._memory import InMemoryMemory, MemoryBase
from ._sandbox import PythonSandbox

__all__ = ["CODE_SYSTEM_PROMPT", "CodeAgent"]

CODE_SYSTEM_PROMPT = """\
You are an expert assistant who solves tasks by writing Python code.
At each step write a short "Thought:" and then exactly one code block:
```py
# your code
```
The code runs in a sandbox. What it prints is shown to you as the next "Observation";
variables persist between steps unless the sandbox says it restarted. When you know the
answer, call final_answer(answer) in your code.

You can call these tools as Python functions (they return their result):
{tools}

You may import only these modules: {imports}.
Files, the network, the environment and subprocesses are not available."""

_CODE = re.compile(r"```(?:py|python|python3)?[ \t]*\n(.*?)```", re.DOTALL)
_MEDIA_REF = re.compile(r"<(?:image|audio|video) media-(\d+)>")
_FINAL_HINT = ("You have used all your steps. Do not write code. Give your best final "
               "answer now, as plain text.")


class CodeAgent(AgentBase):
    """An agent whose model writes Python that calls the tools.

    Args:
        model: the chat model writing the code.
        tools: a :class:`Toolkit`, or tools (``Tool`` instances, functions) to put in one.
        name: the agent's name.
        sys_prompt: the system prompt; ``{tools}`` and ``{imports}`` are filled in
            (default: :data:`CODE_SYSTEM_PROMPT`).
        max_steps: code steps before it asks the model for a plain final answer.
        sandbox: the :class:`PythonSandbox` (default: a new one with
            ``authorized_imports``).
        authorized_imports: modules the code may import (when no ``sandbox`` is given).
        memory: its memory (default: a new :class:`InMemoryMemory`).
        timeout: seconds ``await agent(msg)`` waits.

    ``run(task, **variables)`` starts a new task; ``chat(task, **variables)`` continues the
    conversation (memory and the sandbox's variables are kept). Both return the final
    answer; ``return_code=True`` returns the first code the model writes without running
    it. As an actor, a reply :class:`Msg` holds the answer's text (and any media the tools
    returned that it refers to), with the answer itself in ``metadata["answer"]``.
    """

    def __init__(
        self,
        model: ChatModelBase,
        tools: Toolkit | Sequence[Tool | Callable[..., Any]] | None = None,
        *,
        name: str = "code_agent",
        sys_prompt: str | None = None,
        max_steps: int = 10,
        sandbox: PythonSandbox | None = None,
        authorized_imports: Sequence[str] | None = None,
        memory: MemoryBase | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout)
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.model = model
        if isinstance(tools, Toolkit):
            self.toolkit = tools
        else:
            self.toolkit = Toolkit()
            for tool in tools or ():
                self.toolkit.register_tool_function(tool)
        if sandbox is not None and authorized_imports is not None:
            raise ValueError("give authorized_imports to the sandbox, not to both")
        self.sandbox = sandbox or (PythonSandbox(authorized_imports) if authorized_imports
                                   is not None else PythonSandbox())
        self.sys_prompt = sys_prompt or CODE_SYSTEM_PROMPT
        self.max_steps = max_steps
        self.memory = memory if memory is not None else InMemoryMemory()
        self.steps = 0
        self._media: list[ImageBlock | AudioBlock | VideoBlock] = []
        self.register_state("sys_prompt")

    # -- the seeds' API -----------------------------------------------------------------

    async def run(self, task: str, return_code: bool = False, **variables: Any) -> Any:
        """Do ``task`` from a fresh start; ``variables`` are defined for the code."""
        await self.prepare_for_new_chat()
        return await self.chat(task, return_code=return_code, **variables)

    async def chat(self, task: str, return_code: bool = False, **variables: Any) -> Any:
        """Do ``task``, remembering the earlier tasks of this chat."""
        reply = await self.reply(Msg("user", task, "user"), variables=variables,
                                 return_code=return_code)
        return (reply.metadata or {}).get("answer", reply.get_text_content())

    async def prepare_for_new_chat(self) -> None:
        """Forget the conversation and the sandbox's variables."""
        await self.memory.clear()
        self._media = []
        await self.sandbox.close()

    async def aclose(self) -> None:
        """Stop the sandbox worker."""
        await self.sandbox.close()

    async def on_stop(self) -> None:
        await self.sandbox.close()

    # -- the loop -------------------------------------------------------------------------

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        await self.memory.add(msg)

    async def reply(self, msg: Msg | list[Msg] | None = None,
                    variables: dict[str, Any] | None = None,
                    return_code: bool = False) -> Msg:
        """Work on ``msg`` in code steps until the code calls ``final_answer``."""
        await self.memory.add(msg)
        if variables:
            await self.sandbox.set_variables(variables)
            names = ", ".join(sorted(variables))
            await self.memory.add(Msg("user", f"Variables defined for your code: {names}.",
                                      "user"))
        for step in range(self.max_steps):
            self.steps = step + 1
            thought = await self._think()
            code = "\n".join(block.strip("\n") for block in _CODE.findall(thought))
            if return_code:
                return Msg(self.name, code, "assistant", metadata={"answer": code})
            if not code.strip():
                await self._observe("Error: no code block found. Write your code in a "
                                    "```py ... ``` block, and call final_answer(...) in it "
                                    "when you are done.")
                continue
            result = await self.sandbox.run(code, self._call_tool, list(self.toolkit.tools))
            if result.final and result.error is None:
                if result.output:
                    await self._observe(f"Observation:\n{result.output}")
                return await self._finish(result.answer)
            await self._observe(_observation(result.output, result.value, result.error))
        hint = Msg("user", _FINAL_HINT, "user")
        text = await self._think(hint)
        return await self._finish(text)

    def _prompt(self) -> Msg:
        tools = "\n\n".join(_signature(t.schema.json_schema["function"])
                            for t in self.toolkit.tools.values()) or "(none)"
        imports = ", ".join(self.sandbox.authorized_imports) or "none"
        return Msg("system", self.sys_prompt.format(tools=tools, imports=imports), "system")

    async def _think(self, hint: Msg | None = None) -> str:
        history = [self._prompt(), *await self.memory.get_memory()]
        if hint is not None:
            history.append(hint)
        response = await self.model(history)
        final: ChatResponse = await collect(response)
        msg = Msg(self.name, [b for b in final.content if isinstance(b, TextBlock)]
                  or final.text or "", "assistant")
        await self.memory.add(msg)
        await self.print(msg, True)
        return final.text or ""

    async def _observe(self, text: str, media: Sequence[Any] = ()) -> None:
        content: list[Any] = [TextBlock(text=text), *media]
        msg = Msg("sandbox", content, "user")
        await self.memory.add(msg)
        await self.print(msg, True)

    async def _call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        tool = self.toolkit.tools.get(name)
        if tool is None:
            raise NameError(f"there is no tool named {name!r}")
        params = list(tool.schema.parameters.get("properties", {}))
        if len(args) > len(params):
            raise TypeError(f"{name}() takes {len(params)} arguments, {len(args)} given")
        for key, value in zip(params, args, strict=False):
            if key in kwargs:
                raise TypeError(f"{name}() got two values for {key!r}")
            kwargs[key] = value
        last = ToolResponse()
        async for chunk in self.toolkit.call_tool_function(
                ToolUseBlock(id=uuid.uuid4().hex, name=name, input=kwargs)):
            last = chunk
        if last.is_error:
            raise RuntimeError(last.text)
        media = [b for b in last.content if not isinstance(b, TextBlock)]
        if not media:
            return last.value if last.value is not None else last.text
        refs = []
        for block in media:
            self._media.append(block)
            refs.append(f"<{block.type} media-{len(self._media)}>")
        await self._observe(f"The tool {name} returned {', '.join(refs)}:", media)
        return " ".join(refs) if len(refs) > 1 or last.text else refs[0]

    async def _finish(self, answer: Any) -> Msg:
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        content: list[Any] = [TextBlock(text=text)]
        for index in _MEDIA_REF.findall(text):
            if 0 < int(index) <= len(self._media):
                content.append(self._media[int(index) - 1])
        reply = Msg(self.name, content, "assistant", metadata={"answer": answer})
        await self.memory.add(Msg(self.name, f"Final answer: {text}", "assistant"))
        return reply

    def __repr__(self) -> str:
        return f"CodeAgent(name={self.name!r}, tools={list(self.toolkit.tools)})"


def _observation(output: str, value: Any, error: str | None) -> str:
    parts = [f"Observation:\n{output}" if output else "Observation: (nothing printed)"]
    if value is not None and error is None:
        parts.append(f"Last value: {value!r}")
    if error is not None:
        parts.append(f"Error: {error}\nFix the code and try again.")
    return "\n".join(parts)


def _signature(function: dict[str, Any]) -> str:
    params = function.get("parameters", {})
    props: dict[str, Any] = params.get("properties", {})
    required = set(params.get("required", []))
    types = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
             "array": "list", "object": "dict"}
    args, docs = [], []
    for key, prop in props.items():
        kind = types.get(str(prop.get("type")), "Any")
        args.append(f"{key}: {kind}" + ("" if key in required else " = None"))
        if prop.get("description"):
            docs.append(f"        {key}: {prop['description']}")
    doc = function.get("description") or ""
    body = f'    """{doc}' + ("\n\n    Args:\n" + "\n".join(docs) if docs else "") + '\n    """'
    return f"def {function['name']}({', '.join(args)}):\n{body}"
