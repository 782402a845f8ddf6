"""``python -m agentplex`` runs the command-line interface."""

from .cli import main

main()
