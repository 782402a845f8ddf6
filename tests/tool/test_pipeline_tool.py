"""PipelineTool and pipeline_tool on a tiny model built here; load_tool from folders."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from examples.shared_pipeline_tool import tiny_classifier

from agentplex.message import ToolUseBlock
from agentplex.tool import (
    PipelineTool,
    Toolkit,
    TransformersPipelineTool,
    UntrustedCodeError,
    load_tool,
    pipeline_tool,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tiny_classifier(tmp_path_factory.mktemp("tiny") / "classifier"))


class Spy(TransformersPipelineTool):
    """Records the threads setup and calls run in."""

    def setup(self) -> None:
        self.setup_thread = threading.current_thread()
        super().setup()

    def forward(self, **inputs: Any) -> Any:
        self.call_thread = threading.current_thread()
        return super().forward(**inputs)


async def test_pipeline_tool_loads_lazily_once_and_runs_off_the_loop(classifier: Path) -> None:
    tool = Spy("text-classification", str(classifier), name="sentiment", device="cpu")
    assert tool.pipeline is None and tool.loads == 0  # nothing loaded at construction
    toolkit = Toolkit()
    toolkit.register_tool_function(tool)
    schema = toolkit.get_json_schemas()[0]["function"]
    assert schema["name"] == "sentiment"
    assert schema["parameters"]["required"] == ["text"]
    results = [await toolkit.execute(ToolUseBlock(id=str(i), name="sentiment",
                                                  input={"text": "the movie was great"}))
               for i in range(2)]
    assert tool.loads == 1
    assert tool.setup_thread is not threading.main_thread()
    assert tool.call_thread is not threading.main_thread()
    first = json.loads(results[0].output)  # type: ignore[arg-type]
    assert first == json.loads(results[1].output)  # type: ignore[arg-type]
    assert first[0]["label"] in ("POSITIVE", "NEGATIVE") and 0 <= first[0]["score"] <= 1
    direct = await tool(text="the movie was great")
    assert direct[0]["label"] == first[0]["label"]


async def test_pipeline_tool_shortcut_names_inputs_by_task(classifier: Path) -> None:
    zero_shot = pipeline_tool("zero-shot-classification", "some/model")
    assert list(zero_shot.schema().parameters["properties"]) == ["text", "candidate_labels"]
    assert pipeline_tool("text-to-audio", "m").outputs == ["audio"]
    assert pipeline_tool("image-classification", "m").schema().parameters["required"] == [
        "image"]


class Sentiment(PipelineTool):
    """Transformers' PipelineTool contract: model_class, processors, encode/forward/decode."""

    name = "sentiment"
    description = "Is a text positive or negative?"
    default_checkpoint: ClassVar[str | None] = None  # set by the test

    def __init__(self, **kwargs: Any) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        type(self).model_class = AutoModelForSequenceClassification
        type(self).pre_processor_class = AutoTokenizer
        super().__init__(**kwargs)

    def encode(self, text: str) -> Any:
        """Tokenize.

        Args:
            text: the text to judge.
        """
        return self.pre_processor(text, return_tensors="pt")

    def decode(self, outputs: Any) -> str:
        label = int(outputs.logits[0].argmax())
        return str(self.model.config.id2label[label])


async def test_pipeline_tool_class_chains_encode_forward_decode(classifier: Path) -> None:
    Sentiment.default_checkpoint = str(classifier)
    tool = Sentiment(device="cpu")
    assert isinstance(tool.model, str)  # lazy
    toolkit = Toolkit()
    toolkit.register_tool_function(tool)
    params = toolkit.get_json_schemas()[0]["function"]["parameters"]
    assert params["properties"] == {"text": {"type": "string",
                                             "description": "the text to judge."}}
    result = await toolkit.execute(ToolUseBlock(id="1", name="sentiment",
                                                input={"text": "good movie"}))
    assert result.output in ("POSITIVE", "NEGATIVE") and not result.is_error
    assert tool.post_processor is tool.pre_processor and str(tool.device) == "cpu"
    with pytest.raises(ValueError, match="needs a model"):
        Sentiment.default_checkpoint = None
        Sentiment()


TOOL_PY = '''
from agentplex.tool import Tool


class Shout(Tool):
    name = "shout"
    description = "Shout a text."
    inputs = ["text"]

    def __init__(self, suffix="!"):
        super().__init__()
        self.suffix = suffix

    def forward(self, text):
        return text.upper() + self.suffix
'''

FOREIGN_PY = '''
class Reverse:
    """A smolagents-style tool: same attributes, no agentplex base class."""

    name = "reverse"
    description = "Reverse a text."
    inputs = {"text": {"type": "string", "description": "what to reverse"},
              "times": {"type": "integer", "description": "how often", "nullable": True}}
    output_type = "string"

    def forward(self, text, times=1):
        return text[::-1] if times % 2 else text
'''


async def test_load_tool_needs_trust_to_import_code(tmp_path: Path) -> None:
    folder = tmp_path / "shout"
    folder.mkdir()
    (folder / "tool.py").write_text(TOOL_PY)
    (folder / "tool_config.json").write_text(json.dumps({"tool_class": "Shout"}))
    with pytest.raises(UntrustedCodeError, match="trust_remote_code=True"):
        load_tool(folder)
    tool = load_tool(folder, trust_remote_code=True, suffix="!!")
    assert await tool(text="hi") == "HI!!"
    foreign = tmp_path / "reverse"
    foreign.mkdir()
    (foreign / "tool.py").write_text(FOREIGN_PY)
    rev = load_tool(foreign, trust_remote_code=True)
    schema = rev.schema()
    assert schema.name == "reverse" and schema.parameters["required"] == ["text"]
    toolkit = Toolkit()
    toolkit.register_tool_function(rev)
    out = await toolkit.execute(ToolUseBlock(id="1", name="reverse", input={"text": "abc"}))
    assert out.output == "cba"


async def test_load_tool_from_the_hub_cache_layout(tmp_path: Path, classifier: Path) -> None:
    cache = tmp_path / "hub"
    repo = cache / "spaces--someone--sentiment-tool"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "tool_config.json").write_text(json.dumps({
        "task": "text-classification", "model": str(classifier), "name": "sentiment",
        "description": "Judge a text."}))
    tool = load_tool("someone/sentiment-tool", cache_dir=cache, device="cpu")  # no code
    assert tool.name == "sentiment" and tool.description == "Judge a text."
    result = await tool(text="bad movie")
    assert result[0]["label"] in ("POSITIVE", "NEGATIVE")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_tool("someone/elsewhere", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="revision 'v2'"):
        load_tool("someone/sentiment-tool", cache_dir=cache, revision="v2")
    shutil.rmtree(snapshot)
    (snapshot).mkdir()
    with pytest.raises(ValueError, match="holds no tool"):
        load_tool("someone/sentiment-tool", cache_dir=cache)


async def test_device_map_loads_through_accelerate(classifier: Path) -> None:
    tool = pipeline_tool("text-classification", str(classifier), device_map="cpu")
    result = await tool(text="great")
    assert result[0]["label"] in ("POSITIVE", "NEGATIVE")
    assert str(tool.pipeline.model.device) == "cpu"


@pytest.mark.slow
async def test_a_text_generation_tool_on_the_embedded_smollm2() -> None:
    tool = pipeline_tool("text-generation", "default", name="write", device="cpu",
                         call_kwargs={"max_new_tokens": 4, "do_sample": False})
    toolkit = Toolkit()
    toolkit.register_tool_function(tool)
    out = await toolkit.execute(ToolUseBlock(id="1", name="write",
                                             input={"text": "The capital of France is"}))
    assert not out.is_error, out.output
    generated = json.loads(out.output)[0]["generated_text"]  # type: ignore[arg-type]
    assert generated.startswith("The capital of France is") and len(generated) > 24
