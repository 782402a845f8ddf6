"""The manifest's incidents as a simulation's driver adds to them: the agents it started
again, in ranges of indexes, and the counts that follow."""

from __future__ import annotations

from agentplex.tracing import RunIncidents
from agentplex.tracing.lowlevel import index_ranges


def test_index_ranges_are_compact() -> None:
    assert index_ranges([0, 1, 2, 7, 9, 10]) == "0-2,7,9-10"
    assert index_ranges([5]) == "5" and index_ranges([]) == ""
    assert index_ranges(list(range(100_000))) == "0-99999"


def test_a_restore_turns_lost_agents_into_restarted_and_rolled_back_ones() -> None:
    incidents = RunIncidents()
    incidents.note("lost", {"node": "node-1", "agents": 6, "names": ["a-0"], "batch": 1})
    incidents.note("restore", {"noticed": 3, "round": 2, "agents": 4, "indexes": "0-3",
                               "to_nodes": ["node-0"]})
    incidents.note("restore", {"noticed": 3, "round": 0, "agents": 2, "indexes": "8,10",
                               "to_nodes": ["node-0"]})
    assert (incidents.lost_agents, incidents.restarts, incidents.rolled_back) == (0, 6, 4)
    assert [(r.round, r.indexes) for r in incidents.restored] == [(2, "0-3"), (0, "8,10")]
