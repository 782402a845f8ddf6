"""The cluster: declared resources, placement, resource detection and model actors.

Head and node daemons (placing actors on machines over the ZeroMQ bus) build on these.
"""

from ._detect import detect_gpus, detect_node, worker_environment
from ._errors import Unschedulable
from ._inprocess import Cluster, init
from ._manager import MANAGER, BusNode, ClusterClient, ClusterManager, node_agent_name
from ._model_actor import ModelActor, RemoteChatModel, schema_model
from ._node import ActorSpec, LocalNode, NodeHandle, RestartPolicy, class_path
from ._ray import RayCluster, label_resource
from ._resources import GPU, Bytes, NodeSpec, Resources, parse_bytes
from ._scheduler import Placement, PlacementPolicy, Scheduler

__all__ = [
    "MANAGER",
    "BusNode",
    "ClusterClient",
    "ClusterManager",
    "node_agent_name",
    "ActorSpec",
    "Cluster",
    "LocalNode",
    "NodeHandle",
    "RayCluster",
    "RestartPolicy",
    "class_path",
    "init",
    "label_resource",
    "GPU",
    "Bytes",
    "ModelActor",
    "NodeSpec",
    "Placement",
    "PlacementPolicy",
    "RemoteChatModel",
    "Resources",
    "Scheduler",
    "Unschedulable",
    "detect_gpus",
    "detect_node",
    "parse_bytes",
    "schema_model",
    "worker_environment",
]
