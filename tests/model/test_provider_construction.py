"""Building provider models: credentials, client arguments, API versions, and request
errors that are the caller's, not the provider's."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentplex.message import ImageBlock, Msg, TextBlock, URLSource
from agentplex.model import (
    FallbackModel,
    InvalidRequestError,
    MissingCredentialsError,
    ProviderError,
    ScriptedChatModel,
)
from tests.support.model_inputs import history
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import WIRES, GeminiWire, Wire
from tests.support.results import as_response

pytestmark = pytest.mark.anyio

KEY_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                 "GEMINI_API_KEY", "GOOGLE_API_KEY", "DASHSCOPE_API_KEY",
                 "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN", "HF_TOKEN",
                 "HUGGING_FACE_HUB_TOKEN")


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no saved login


@pytest.mark.usefixtures("no_keys")
@pytest.mark.parametrize(("cls", "variable", "kwargs"), [
    ("openai:OpenAIChatModel", "OPENAI_API_KEY", {}),
    ("anthropic:AnthropicChatModel", "ANTHROPIC_API_KEY", {}),
    ("gemini:GeminiChatModel", "GEMINI_API_KEY", {}),
    ("dashscope:DashScopeChatModel", "DASHSCOPE_API_KEY", {}),
    ("azure:AzureOpenAIChatModel", "AZURE_OPENAI_API_KEY",
     {"azure_endpoint": "https://example.invalid"}),
    ("huggingface:HuggingFaceChatModel", "HF_TOKEN", {}),
])
def test_a_missing_key_fails_at_construction(cls: str, variable: str, kwargs: dict[str, str]
                                             ) -> None:
    import importlib

    module, _, name = cls.partition(":")
    model_class = getattr(importlib.import_module(f"agentplex.model.{module}"), name)
    with pytest.raises(MissingCredentialsError, match=variable):
        model_class("m", **kwargs)


def test_one_table_gives_the_provider_classes_and_prefixes() -> None:
    import importlib

    import agentplex.model as model
    from agentplex.model import init_chat_model
    from agentplex.model._registry import PROVIDERS

    for row in PROVIDERS:
        assert row.cls in model.__all__
        holder = importlib.import_module(f"agentplex.model.{row.module}")
        assert getattr(model, row.cls) is getattr(holder, row.cls)
    prefixes = sorted(["scripted", *(p for row in PROVIDERS for p in row.prefixes)])
    with pytest.raises(ValueError, match="unknown model provider") as info:
        init_chat_model("nosuch:m")
    assert str(info.value).endswith(f"(known: {', '.join(prefixes)})")


def test_a_missing_local_model_names_its_provider(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from agentplex.model import ModelNotAvailableError, init_chat_model

    for provider in ("mlx", "transformers"):
        with pytest.raises(ModelNotAvailableError, match=rf"^\[{provider}:"):
            init_chat_model(f"{provider}:{tmp_path / 'nothing-here'}")


@pytest.mark.usefixtures("no_keys")
async def test_a_compatible_server_needs_no_key(server: FakeServer) -> None:
    from agentplex.model.openai import OpenAIChatModel

    model = server.track(OpenAIChatModel("m", base_url=server.url + "/v1"))
    assert model.client.api_key == "not-needed"


@pytest.mark.parametrize("wire", [w for w in WIRES if w.name != "dashscope"],
                         ids=lambda w: w.name)
async def test_client_args_may_carry_timeout_and_retries(server: FakeServer, wire: Wire
                                                         ) -> None:
    wire.text(server, "ok")
    model = wire.make(server, client_args={"timeout": 12.0, "max_retries": 4})
    assert (model.timeout, model.retry_policy.max_retries) == (12.0, 4)
    assert as_response(await model(history())).text == "ok"


async def test_gemini_through_a_gateway_names_api_version_on_405(server: FakeServer) -> None:
    server.raw("", status=405, content_type="text/plain")
    with pytest.raises(ProviderError, match=r'HTTP 405.*api_version="v1beta"'):
        await GeminiWire().make(server)(history())


@pytest.mark.usefixtures("no_keys")
def test_huggingface_takes_api_key_like_every_provider() -> None:
    from agentplex.model import init_chat_model

    model = init_chat_model("huggingface:meta-llama/Llama-3.1-8B-Instruct", api_key="hf-key")
    assert model.client.token == "hf-key"  # type: ignore[attr-defined]


async def test_gemini_api_version(server: FakeServer) -> None:
    wire = GeminiWire()
    wire.text(server, "ok")
    await wire.make(server, api_version="v1beta")(history())
    assert server.last.path == "/v1beta/models/test-model:generateContent"
    wire.text(server, "ok")
    await wire.make(server, client_args={"http_options": {"headers": {"x-gw": "1"}}})(history())
    assert server.last.headers["x-gw"] == "1" and server.last.path.startswith("/v1/")


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
async def test_request_building_errors_are_the_callers(server: FakeServer, wire: Wire) -> None:
    model = wire.make(server)
    with pytest.raises(InvalidRequestError, match="list of Msg"):
        await model("hello")  # type: ignore[arg-type]
    unreadable = Msg("user", [TextBlock(text="look"),
                              ImageBlock(source=URLSource(url="ftp://host/x.png"))], "user")
    with pytest.raises(InvalidRequestError) as info:
        await model([unreadable])
    assert not isinstance(info.value, ProviderError)
    assert server.requests == []


async def test_fallback_does_not_hide_a_request_error(server: FakeServer) -> None:
    backup = ScriptedChatModel(["from the backup"])
    model = FallbackModel(WIRES[0].make(server), backup)
    with pytest.raises(InvalidRequestError):
        await model("hello")  # type: ignore[arg-type]
    assert backup.calls == []
