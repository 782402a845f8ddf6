"""Cluster plumbing: names and helpers the daemons, the Ray backend and model actors share.

The head's manager actor name and each node agent's name, the table of the head's
operations (:data:`REQUESTS`) and :func:`ask`, which sends one and raises a cluster error
it answers as its own type, an actor class's import path,
the Ray resource label of a GPU kind, the node's cache of code packages shipped
over the bus and :func:`ship_code`, which sends one, and the stand-in class for a structured-output
schema that crossed the wire, and the head and node daemons' entry points (what
``agentplex head`` / ``agentplex node`` run). Users place actors through :mod:`agentplex.cluster`.
"""

from ._bus_node import MANAGER, BusNode, node_agent_name
from ._code import MAX_CODE_BYTES, MAX_CODE_FILES, CodeCache, code_package_name, ship_code
from ._daemon import run_head, run_node
from ._model_actor import schema_model
from ._node import class_path
from ._ops import REQUESTS, Request, ask, error_from_wire, error_to_wire
from ._options import split_options
from ._ray import label_resource

__all__ = [
    "BusNode",
    "CodeCache",
    "MANAGER",
    "MAX_CODE_BYTES",
    "MAX_CODE_FILES",
    "REQUESTS",
    "Request",
    "ask",
    "class_path",
    "code_package_name",
    "error_from_wire",
    "error_to_wire",
    "label_resource",
    "node_agent_name",
    "run_head",
    "run_node",
    "schema_model",
    "ship_code",
    "split_options",
]
