"""``agentplex.model.transformers``: the local Transformers provider.

The implementation lives in :mod:`agentplex.model.local`; this module keeps the provider's
import path (``from agentplex.model.transformers import TransformersChatModel``) and the
factory behind ``init_chat_model("transformers:...")``.
"""

from .local import ModelNotAvailableError, TransformersChatModel, create

__all__ = ["ModelNotAvailableError", "TransformersChatModel", "create"]
