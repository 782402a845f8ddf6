"""agentplex: an async actor-based multi-agent runtime.

The public surface is re-exported here; subpackages hold the details.
"""

from .agent import AgentBase, AgentCall, Middleware, StateModule
from .bus import connect
from .message import (
    AudioBlock,
    Base64Source,
    DecodeError,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from .model import (
    ChatModelBase,
    ChatResponse,
    ChatUsage,
    ScriptedChatModel,
    init_chat_model,
)
from .orchestration import (
    FanoutPipeline,
    MsgHub,
    SequentialPipeline,
    fanout_pipeline,
    sequential_pipeline,
    stream_printing_messages,
)
from .runtime import (
    Actor,
    ActorError,
    ActorNotFound,
    ActorRef,
    ActorStopped,
    CallTimeout,
    HandlerError,
    MailboxFull,
    Runtime,
    get_runtime,
)

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorStopped",
    "AgentBase",
    "AgentCall",
    "AudioBlock",
    "Base64Source",
    "CallTimeout",
    "ChatModelBase",
    "ChatResponse",
    "ChatUsage",
    "DecodeError",
    "FanoutPipeline",
    "HandlerError",
    "ImageBlock",
    "MailboxFull",
    "Middleware",
    "Msg",
    "MsgHub",
    "Runtime",
    "ScriptedChatModel",
    "SequentialPipeline",
    "StateModule",
    "TextBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "VideoBlock",
    "__version__",
    "connect",
    "fanout_pipeline",
    "get_runtime",
    "init_chat_model",
    "sequential_pipeline",
    "stream_printing_messages",
]
