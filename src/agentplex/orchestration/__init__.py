"""Multi-agent orchestration: MsgHub and pipelines."""

from ._hub import MsgHub, Participant
from ._pipeline import (
    FanoutPipeline,
    SequentialPipeline,
    fanout_pipeline,
    sequential_pipeline,
    stream_printing_messages,
)

__all__ = [
    "FanoutPipeline",
    "MsgHub",
    "Participant",
    "SequentialPipeline",
    "fanout_pipeline",
    "sequential_pipeline",
    "stream_printing_messages",
]
