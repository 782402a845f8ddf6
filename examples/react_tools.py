"""A ReAct agent with tools: it reasons, calls tools, reads their results and answers.

    python examples/react_tools.py "What is 17 * 23, and what is the capital of France?"
    python examples/react_tools.py --model scripted          # no model at all (fast)
    python examples/react_tools.py --model openai:gpt-4o-mini
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import operator
from collections.abc import Callable

from agentplex import Msg, Runtime, ScriptedChatModel, ToolUseBlock, init_chat_model
from agentplex.agent import ReActAgent
from agentplex.model import ChatModelBase
from agentplex.tool import Toolkit

CAPITALS = {"france": "Paris", "japan": "Tokyo", "kenya": "Nairobi", "peru": "Lima"}
_OPS: dict[type[ast.AST], Callable[..., float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: numbers with + - * / ** and parentheses, e.g. "17 * 23".
    """
    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)}")

    return str(walk(ast.parse(expression, mode="eval").body))


def capital(country: str) -> str:
    """Look up the capital city of a country.

    Args:
        country: the country's English name.
    """
    found = CAPITALS.get(country.strip().lower())
    if found is None:
        raise KeyError(f"I do not know the capital of {country}")
    return found


def scripted() -> ChatModelBase:
    return ScriptedChatModel([
        [ToolUseBlock(id="1", name="calculate", input={"expression": "17 * 23"}),
         ToolUseBlock(id="2", name="capital", input={"country": "France"})],
        "17 * 23 is 391, and the capital of France is Paris.",
    ], model_name="scripted-react")


async def ask(model: ChatModelBase, question: str) -> Msg:
    toolkit = Toolkit()
    toolkit.register_tool_function(calculate)
    toolkit.register_tool_function(capital)
    async with Runtime():
        agent = ReActAgent("Helper", "You answer with the help of your tools.", model,
                           toolkit=toolkit, max_iters=5, parallel_tool_calls=True)
        return await agent(Msg("user", question, "user"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?",
                        default="What is 17 * 23, and what is the capital of France?")
    parser.add_argument("--model", default="transformers:default")
    args = parser.parse_args()
    model = scripted() if args.model == "scripted" else init_chat_model(args.model)
    answer = asyncio.run(ask(model, args.question))
    print(f"answer: {answer.get_text_content()}")


if __name__ == "__main__":
    main()
