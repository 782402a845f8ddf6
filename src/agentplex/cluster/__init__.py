"""The cluster: declared resources, placement, resource detection, model and tool actors.

Head and node daemons (placing actors on machines over the ZeroMQ bus) build on these.
"""

from ._batch import ActorRefs, RoundResult
from ._detect import detect_gpus, detect_node, worker_environment
from ._errors import NodeFailed, Unschedulable
from ._inprocess import Cluster, init
from ._manager import ClusterClient, ClusterManager
from ._model_actor import ModelActor, RemoteChatModel
from ._node import ActorSpec, LocalNode, NodeHandle, RestartPolicy
from ._ray import RayCluster
from ._resources import GPU, Bytes, NodeSpec, Resources, parse_bytes
from ._scheduler import Placement, PlacementPolicy, Scheduler
from ._tool_actor import ActorTool, PipelineToolActor, ToolActor

__all__ = [
    "ActorRefs",
    "ActorSpec",
    "ActorTool",
    "Bytes",
    "Cluster",
    "ClusterClient",
    "ClusterManager",
    "GPU",
    "LocalNode",
    "ModelActor",
    "NodeFailed",
    "NodeHandle",
    "NodeSpec",
    "PipelineToolActor",
    "Placement",
    "PlacementPolicy",
    "RayCluster",
    "RemoteChatModel",
    "Resources",
    "RestartPolicy",
    "RoundResult",
    "Scheduler",
    "ToolActor",
    "Unschedulable",
    "detect_gpus",
    "detect_node",
    "init",
    "parse_bytes",
    "worker_environment",
]
