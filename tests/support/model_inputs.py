"""Inputs shared by the provider tests: a tool, a schema, an image, a recording sleep."""

from __future__ import annotations

from pydantic import BaseModel

from agentplex.message import Base64Source, ImageBlock, Msg, TextBlock
from agentplex.model._retry import RetryPolicy

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
CLOCK_TOOL = {"type": "function",
              "function": {"name": "get_time", "description": "The time.",
                           "parameters": {"type": "object", "properties": {}}}}

PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
           "AAAABJRU5ErkJggg==")


class City(BaseModel):
    """A city and its population."""

    name: str
    population: int


def history() -> list[Msg]:
    return [Msg("system", "You are terse.", "system"), Msg("user", "Hi there", "user")]


def image_history() -> list[Msg]:
    return [Msg("user", [TextBlock(text="What is this?"),
                         ImageBlock(source=Base64Source(media_type="image/png", data=PNG_B64))],
                "user")]


class Sleeps:
    """An injectable sleep that records the delays and does not wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def policy(max_retries: int = 2) -> tuple[RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    return RetryPolicy(max_retries=max_retries, base_delay=0.01, sleep=sleeps), sleeps
