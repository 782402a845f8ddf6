"""Plumbing of ``agentplex.sim``: how the driver reaches many agents, where they are
placed, the node processes a run starts, the code it ships to a cluster's nodes, and what it
writes."""

from ._calls import ask_all, ask_each, load_states, states_of, tell_all
from ._errors import NodesFailed
from ._nodes import (
    LocalNodes,
    UserCode,
    class_code,
    use_import_path,
    user_code,
    wait_for_line,
)
from ._place import Placement, node_allow_list, placement, start_local_nodes
from ._runner import fork_options, resume_options
from ._scenario import parse_sets, resolve_class, takes_name
from ._ship import Shipped, ship_scenario
from ._sim import round_rng
from ._store import Checkpoint, SurveyTables, checkpoint_at, write_table
from ._sweep import FINISHED, parse_grid, parse_seeds, write_summary

__all__ = [
    "Checkpoint",
    "FINISHED",
    "LocalNodes",
    "NodesFailed",
    "Placement",
    "Shipped",
    "SurveyTables",
    "UserCode",
    "ask_all",
    "ask_each",
    "checkpoint_at",
    "class_code",
    "fork_options",
    "load_states",
    "node_allow_list",
    "parse_grid",
    "parse_seeds",
    "parse_sets",
    "placement",
    "resolve_class",
    "resume_options",
    "round_rng",
    "ship_scenario",
    "start_local_nodes",
    "states_of",
    "takes_name",
    "tell_all",
    "use_import_path",
    "user_code",
    "wait_for_line",
    "write_summary",
    "write_table",
]
