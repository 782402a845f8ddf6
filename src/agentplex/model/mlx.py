"""``agentplex.model.mlx``: the MLX provider (the implementation is in
:mod:`agentplex.model.local`) and the factory behind ``init_chat_model("mlx:<folder>")``."""

from typing import Any

from .local import MLXChatModel

__all__ = ["MLXChatModel", "create"]


def create(model_name: str = "default", **kwargs: Any) -> MLXChatModel:
    """``init_chat_model("mlx:<folder or default>")``."""
    return MLXChatModel(model_name or "default", **kwargs)
