"""JSON schemas from function signatures and docstrings."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from agentplex.tool import function_schema
from agentplex.tool.lowlevel import parse_docstring


def google(city: str, days: int = 3, units: Literal["metric", "imperial"] = "metric") -> str:
    """Get the weather forecast.

    Looks the city up first.

    Args:
        city: The city's name.
        days (int): How many days
            to forecast.
        units: Unit system.

    Returns:
        The forecast.
    """
    return city


def numpy(query: str, limit: Optional[int] = None) -> list[str]:
    """Search the index.

    Parameters
    ----------
    query : str
        What to look for.
    limit : int, optional
        At most this many hits.

    Returns
    -------
    list of str
    """
    return []


def rest(path: str, mode: str = "r") -> str:
    """Read a file.

    :param path: Where the file is.
    :param mode: How to open it.
    :returns: The text.
    """
    return path


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Point(BaseModel):
    """A point."""

    x: float
    y: float = 0.0


class Node(BaseModel):
    value: int
    children: list[Node] = Field(default_factory=list)


def _params(func: Any, **kwargs: Any) -> dict[str, Any]:
    return function_schema(func, **kwargs).parameters


def test_google_style() -> None:
    schema = function_schema(google)
    assert schema.name == "google"
    assert schema.description == "Get the weather forecast.\n\nLooks the city up first."
    params = schema.parameters
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {"type": "string", "description": "The city's name."}
    assert params["properties"]["days"] == {
        "type": "integer", "default": 3, "description": "How many days to forecast."}
    assert params["properties"]["units"]["enum"] == ["metric", "imperial"]
    assert params["additionalProperties"] is False
    assert schema.json_schema["type"] == "function"
    assert schema.json_schema["function"]["parameters"] is params


def test_numpy_style_and_optional() -> None:
    schema = function_schema(numpy)
    assert schema.description == "Search the index."
    limit = schema.parameters["properties"]["limit"]
    assert limit["description"] == "At most this many hits."
    assert limit["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert limit["default"] is None
    assert schema.parameters["required"] == ["query"]


def test_rest_style() -> None:
    schema = function_schema(rest)
    assert schema.description == "Read a file."
    props = schema.parameters["properties"]
    assert props["path"]["description"] == "Where the file is."
    assert props["mode"] == {"type": "string", "default": "r", "description": "How to open it."}


@pytest.mark.parametrize(
    ("doc", "description", "params"),
    [
        (None, "", {}),
        ("Just a line.", "Just a line.", {}),
        ("Do it.\n\nArgs:\n    x: the x\n", "Do it.", {"x": "the x"}),
        ("Do it.\n\n:param x: the x\n", "Do it.", {"x": "the x"}),
    ],
)
def test_parse_docstring(doc: str | None, description: str, params: dict[str, str]) -> None:
    assert parse_docstring(doc) == (description, params)


def test_enum_model_list_dict_and_any() -> None:
    def shapes(color: Color, where: Point, tags: list[str], weights: dict[str, float],
               anything: Any, pair: tuple[int, int] = (1, 2)) -> None:
        """Shapes."""

    props = _params(shapes)["properties"]
    assert props["color"] == {"type": "string", "enum": ["red", "green"]}
    assert props["where"]["type"] == "object"
    assert props["where"]["properties"]["x"] == {"type": "number"}
    assert props["where"]["required"] == ["x"]
    assert "$ref" not in str(props) and "title" not in str(props)
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["anything"] == {}
    assert props["pair"]["type"] == "array"


def test_recursive_model_keeps_defs() -> None:
    def tree(root: Node) -> None:
        """Walk a tree."""

    params = _params(tree)
    assert "$defs" in params and "Node" in params["$defs"]
    assert params["properties"]["root"]["properties"]["children"]["items"] == {
        "$ref": "#/$defs/Node"}


def test_preset_kwargs_hidden_and_varargs_skipped() -> None:
    def call(query: str, api_key: str, *args: Any, **kwargs: Any) -> None:
        """Call an API.

        Args:
            query: what to ask
            api_key: the secret
        """

    params = _params(call, preset=["api_key"])
    assert list(params["properties"]) == ["query"]
    assert "api_key" not in str(params)
    assert "additionalProperties" not in params  # **kwargs accepts extra arguments


def test_annotated_field_and_property_named_title() -> None:
    def note(title: Annotated[str, Field(description="the heading", max_length=5)]) -> None:
        """Note."""

    props = _params(note)["properties"]
    assert props["title"] == {"type": "string", "description": "the heading", "maxLength": 5}


def test_names_that_clash_with_pydantic() -> None:
    def odd(model_config: str, schema: int, copy: bool = False) -> None:
        """Odd names."""

    schema = function_schema(odd)
    assert list(schema.parameters["properties"]) == ["model_config", "schema", "copy"]
    assert schema.model is not None
    validated = schema.model.model_validate({"model_config": "a", "schema": 1})
    assert schema.arg_names is not None
    assert {schema.arg_names[k]: getattr(validated, k) for k in schema.arg_names} == {
        "model_config": "a", "schema": 1, "copy": False}


def test_name_and_description_overrides_and_methods() -> None:
    class Calc:
        def add(self, a: int, b: int) -> int:
            """Add two numbers."""
            return a + b

    schema = function_schema(Calc().add, name="plus", description="Sum.")
    assert (schema.name, schema.description) == ("plus", "Sum.")
    assert list(schema.parameters["properties"]) == ["a", "b"]


def test_no_parameters() -> None:
    def now() -> str:
        """The time."""
        return ""

    assert _params(now) == {"type": "object", "properties": {}, "additionalProperties": False}
