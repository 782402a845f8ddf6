"""Scenarios bundled with agentplex, written as a user would write them (copy one to start
your own): :mod:`.opinion` (bounded confidence on a seeded social network) and
:mod:`.guessing` (the two-thirds-of-the-average game of ``agentplex demo``)."""
