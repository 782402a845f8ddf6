"""agentplex: an async actor-based multi-agent runtime.

The public surface is re-exported here; subpackages hold the details.
"""

from .agent import (
    AgentBase,
    AgentCall,
    CodeAgent,
    InMemoryMemory,
    Middleware,
    ReActAgent,
    StateModule,
    UserAgent,
    load_session,
    save_session,
)
from .bus import connect
from .errors import AgentplexError
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
from .tool import Tool, Toolkit, ToolResponse

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorError",
    "ActorNotFound",
    "ActorRef",
    "ActorStopped",
    "AgentBase",
    "AgentCall",
    "AgentplexError",
    "AudioBlock",
    "Base64Source",
    "CallTimeout",
    "ChatModelBase",
    "ChatResponse",
    "ChatUsage",
    "CodeAgent",
    "DecodeError",
    "FanoutPipeline",
    "HandlerError",
    "ImageBlock",
    "InMemoryMemory",
    "MailboxFull",
    "Middleware",
    "Msg",
    "MsgHub",
    "ReActAgent",
    "Runtime",
    "ScriptedChatModel",
    "SequentialPipeline",
    "StateModule",
    "TextBlock",
    "ThinkingBlock",
    "Tool",
    "ToolResponse",
    "ToolResultBlock",
    "ToolUseBlock",
    "Toolkit",
    "URLSource",
    "UserAgent",
    "VideoBlock",
    "__version__",
    "connect",
    "fanout_pipeline",
    "get_runtime",
    "init_chat_model",
    "load_session",
    "save_session",
    "sequential_pipeline",
    "stream_printing_messages",
]
