"""``python -m agentplex.cluster.worker``: the process of one GPU actor (started by a node)."""

from __future__ import annotations

import argparse
import asyncio

from ._daemon import run_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--head", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--allow", action="append", default=[])
    args = parser.parse_args()
    asyncio.run(run_worker(args.head, args.node_id, args.allow))


if __name__ == "__main__":
    main()
