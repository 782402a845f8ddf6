"""Cluster plumbing: names and helpers the daemons, the Ray backend and model actors share.

The head's manager actor name and each node agent's name, an actor class's import path,
the Ray resource label of a GPU kind, and the stand-in class for a structured-output
schema that crossed the wire, and the head and node daemons' entry points (what
``agentplex head`` / ``agentplex node`` run). Users place actors through :mod:`agentplex.cluster`.
"""

from ._daemon import run_head, run_node
from ._manager import MANAGER, BusNode, node_agent_name
from ._model_actor import schema_model
from ._node import class_path
from ._ray import label_resource

__all__ = [
    "BusNode",
    "MANAGER",
    "class_path",
    "label_resource",
    "node_agent_name",
    "run_head",
    "run_node",
    "schema_model",
]
