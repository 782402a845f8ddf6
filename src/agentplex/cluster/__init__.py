"""The cluster: declared resources, placement, resource detection, model and tool actors,
and served engines (``Cluster.serve``).

One contract: spawn options are one model (:class:`SpawnOptions`, :class:`BatchOptions`),
and what a cluster offers is one protocol (:class:`ClusterAPI`) that :class:`Cluster`,
:class:`ClusterClient` and :class:`RayCluster` implement and :func:`init` returns. Head
and node daemons (placing actors on machines over the ZeroMQ bus) build on these.
"""

from ..bus import SpawnRefused
from ._client import ClusterClient
from ._cluster import Cluster
from ._code import CodePackage, pack_code
from ._detect import detect_gpus, detect_node, worker_environment
from ._errors import (
    CodeRefused,
    CodeRejected,
    NodeFailed,
    NodesMissing,
    NotSupported,
    Unschedulable,
)
from ._init import init
from ._manager import ClusterManager
from ._model_actor import ModelActor, RemoteChatModel
from ._node import ActorSpec, LocalNode, NodeHandle
from ._options import BatchOptions, RestartPolicy, SpawnOptions
from ._protocol import ClusterAPI
from ._ray import RayCluster
from ._refs import ActorRefs
from ._resources import GPU, Bytes, NodeSpec, Resources, parse_bytes
from ._rounds import RoundResult
from ._scheduler import Placement, PlacementPolicy, Scheduler
from ._serve import EngineActor, ServedModels
from ._served_model import ServedChatModel
from ._tool_actor import ActorTool, PipelineToolActor, ToolActor

__all__ = [
    "ActorRefs",
    "ActorSpec",
    "ActorTool",
    "BatchOptions",
    "Bytes",
    "Cluster",
    "ClusterAPI",
    "ClusterClient",
    "ClusterManager",
    "CodePackage",
    "CodeRefused",
    "CodeRejected",
    "EngineActor",
    "GPU",
    "LocalNode",
    "ModelActor",
    "NodeFailed",
    "NodeHandle",
    "NodeSpec",
    "NodesMissing",
    "NotSupported",
    "PipelineToolActor",
    "Placement",
    "PlacementPolicy",
    "RayCluster",
    "RemoteChatModel",
    "Resources",
    "RestartPolicy",
    "RoundResult",
    "Scheduler",
    "ServedChatModel",
    "ServedModels",
    "SpawnOptions",
    "SpawnRefused",
    "ToolActor",
    "Unschedulable",
    "detect_gpus",
    "detect_node",
    "init",
    "pack_code",
    "parse_bytes",
    "worker_environment",
]
