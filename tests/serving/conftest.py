"""Fixtures of the serving tests: scripted models behind a real server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentplex.model import ScriptedChatModel
from agentplex.serving import ModelServer
from tests.support.serving_models import LogprobModel, echo_or_call


@pytest.fixture
def scripted() -> ScriptedChatModel:
    return ScriptedChatModel(echo_or_call, stream=True, model_name="scripted-echo")


@pytest.fixture
async def server(scripted: ScriptedChatModel) -> AsyncIterator[ModelServer]:
    models = {"echo": scripted, "logprobs": LogprobModel("logprobs", stream=True)}
    async with ModelServer(models) as srv:
        yield srv
