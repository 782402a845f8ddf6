"""``agentplex head``, ``agentplex node`` and ``agentplex status``: a cluster on the bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["head", "node", "status"]

KeysOpt = Annotated[Path | None, typer.Option(
    help="This process's CURVE key pair (NAME.key_secret from 'agentplex keys generate'); "
         "also read from AGENTPLEX_PUBLIC_KEY / AGENTPLEX_SECRET_KEY.")]
HeadKeyOpt = Annotated[Path | None, typer.Option(help="The head's public key file.")]
HeartbeatOpt = Annotated[float, typer.Option(
    help="Seconds of silence after which a peer on the bus is declared lost.")]
AllowOpt = Annotated[list[Path], typer.Option(
    "--allow-key", help="Public key files of peers admitted (with keys; the head's key, "
    "when given, is admitted too). Repeatable.")]
BindOpt = Annotated[str | None, typer.Option(
    help="With --address: the endpoint the run's driver listens on, which the cluster's "
    "nodes answer to (default tcp://127.0.0.1:0: nodes on this machine only; give this "
    "machine's address, e.g. tcp://10.0.0.5:0, for nodes on others).")]
ShipCodeOpt = Annotated[bool, typer.Option(
    "--ship-code", help="With --address: send the scenario's file over the bus to the "
    "cluster's nodes (started with --accept-code) before spawning; named by its SHA-256, "
    "so it travels once.")]
ShipFolderOpt = Annotated[Path | None, typer.Option(
    help="With --ship-code: ship this folder of .py files, which holds the scenario's file "
    "(its modules import each other relatively).")]


def security(keys: Path | None, head_key: Path | None, allow: list[Path]) -> dict[str, Any]:
    """The transport's key options: this process's pair (``keys``, else the environment's),
    the head's key and the admitted peers' keys; none without a pair."""
    from ..bus import keypair_from_env, load_keypair, load_public_key

    pair = load_keypair(keys) if keys is not None else keypair_from_env()
    if pair is None:
        return {}
    options: dict[str, Any] = {"keys": pair, "allow": [load_public_key(p) for p in allow]}
    if head_key is not None:  # the head connects back to us (its calls, its answers)
        options["head_key"] = load_public_key(head_key)
        options["allow"].append(options["head_key"])
    return options


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"labels are KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


ExitWithOpt = Annotated[int | None, typer.Option(
    help="Stop when the process with this pid ends (a cluster started for one program).")]

def head(
    bind: Annotated[str, typer.Option(help="Endpoint to listen on.")] = "tcp://127.0.0.1:5555",
    keys: KeysOpt = None,
    allow_key: AllowOpt = [],  # noqa: B006 - typer reads the default
    insecure: Annotated[bool, typer.Option(
        help="Allow a non-loopback bind without keys.")] = False,
    ping_interval: Annotated[float, typer.Option(help="Seconds between node checks.")] = 1.0,
    dead_after: Annotated[float, typer.Option(
        help="Seconds a node may stay silent before its actors are restarted.")] = 10.0,
    backend: Annotated[str, typer.Option(
        help="'local' (agentplex nodes) or 'ray' (Ray places the actors).")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="With --backend ray: the Ray cluster (e.g. auto); default: a local Ray.")] = None,
    heartbeat_timeout: HeartbeatOpt = 5.0,
    exit_with: ExitWithOpt = None,
) -> None:
    """Run the head: the bus's directory and the cluster's scheduler."""
    from ..cluster.lowlevel import run_head

    options = security(keys, None, allow_key)
    if backend not in ("local", "ray"):
        raise typer.BadParameter("--backend is 'local' or 'ray'")
    asyncio.run(run_head(bind, ping_interval=ping_interval, dead_after=dead_after,
                         backend=backend, ray_address=ray_address,
                         insecure=insecure, heartbeat_timeout=heartbeat_timeout,
                         exit_with=exit_with, **options))


def node(
    head_address: Annotated[str, typer.Option("--head", help="The head's endpoint.")],
    node_id: Annotated[str | None, typer.Option("--id", help="This node's id.")] = None,
    bind: Annotated[str, typer.Option(help="Endpoint to listen on.")] = "tcp://127.0.0.1:0",
    gpus: Annotated[int | None, typer.Option(
        help="Declare this many GPUs instead of detecting them.")] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        help="Memory of each declared GPU, e.g. 24GiB.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs to offer (default: all).")] = None,
    label: Annotated[list[str], typer.Option(help="KEY=VALUE label. Repeatable.")] = [],  # noqa: B006
    allow: Annotated[list[str], typer.Option(
        help="Modules actors may be spawned from. Repeatable.")] = [],  # noqa: B006
    path: Annotated[list[Path], typer.Option(
        help="A folder to import those modules from (the working directory always is). "
             "Repeatable.")] = [],  # noqa: B006
    keys: KeysOpt = None,
    head_key: HeadKeyOpt = None,
    allow_key: AllowOpt = [],  # noqa: B006 - typer reads the default
    insecure: Annotated[bool, typer.Option(
        help="Allow a non-loopback bind without keys.")] = False,
    heartbeat_timeout: HeartbeatOpt = 5.0,
    drain_timeout: Annotated[float, typer.Option(
        help="Seconds the actors get to empty their mailboxes on SIGTERM / Ctrl-C.")] = 10.0,
    exit_with: ExitWithOpt = None,
    accept_code: Annotated[bool, typer.Option(
        "--accept-code", help="Import code packages that peers ship over the bus "
        "('agentplex run --ship-code'), each named by its SHA-256, and allow their "
        "modules. Needs CURVE keys unless the node and its head are on loopback.")] = False,
) -> None:
    """Join a cluster: report this machine's resources and host the actors placed here.

    Actor classes are imported from the working directory, the --path folders and
    PYTHONPATH, and only from the --allow modules (and, with --accept-code, from the
    code packages shipped to it)."""
    from ..bus import InsecureBindError
    from ..cluster import detect_node
    from ..cluster.lowlevel import run_node
    from ..sim.lowlevel import use_import_path

    for folder in path:
        if not folder.is_dir():
            raise typer.BadParameter(f"--path {folder}: no such folder")
    use_import_path(path)

    spec = detect_node(node_id, gpus=gpus, gpu_memory=gpu_memory, cpus=cpus,
                       labels=_labels(label))
    try:
        asyncio.run(run_node(head_address, spec, bind=bind, spawn_allow=allow,
                             insecure=insecure, heartbeat_timeout=heartbeat_timeout,
                             drain_timeout=drain_timeout, exit_with=exit_with,
                             accept_code=accept_code, **security(keys, head_key, allow_key)))
    except InsecureBindError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def status(
    head_address: Annotated[str, typer.Option("--head", help="The head's endpoint.")
                            ] = "tcp://127.0.0.1:5555",
    keys: KeysOpt = None,
    head_key: HeadKeyOpt = None,
) -> None:
    """Show the cluster's nodes, their GPUs (used / free) and the actors on each, and the
    batches by run."""
    from ..runtime import CallTimeout, PeerLost

    try:
        asyncio.run(_status(head_address, security(keys, head_key, [])))
    except (CallTimeout, PeerLost) as exc:  # no head there, or it refused our key
        typer.echo(f"error: cannot reach the head at {head_address}: {exc}", err=True)
        raise typer.Exit(1) from None


async def _status(head_address: str, options: dict[str, Any]) -> None:
    from ..bus import connect
    from ..cluster import ClusterClient

    async with connect(head_address, **options) as runtime:
        client = ClusterClient(runtime, timeout=10)
        nodes = await client.status()
        served = await client.served_status()
    table = Table(title=f"cluster at {head_address}")
    for column in ("node", "alive", "cpus used", "gpus (share, memory used / total)",
                   "labels", "actors"):
        table.add_column(column)
    for n in nodes:
        gpus = "\n".join(f"{g['index']}: {g['name']} {g['share']:g} "
                         f"{g['memory'] / 2**30:.1f}/{g['total'] / 2**30:.1f} GiB"
                         for g in n["gpus"]) or "-"
        labels = ",".join(f"{k}={v}" for k, v in n["labels"].items()) or "-"
        table.add_row(n["node"], "yes" if n["alive"] else "no", n["cpus"], gpus, labels,
                      "\n".join(n["actors"]) or "-")
    console = Console()
    console.print(table)
    batches = batches_table(nodes)
    if batches.row_count:
        console.print(batches)
    if served:
        console.print(served_table(served))


def batches_table(nodes: list[dict[str, Any]]) -> Table:
    """The batches by run: each batch's actors and the nodes they are on."""
    found: dict[str, dict[str, Any]] = {}
    for n in nodes:
        runs = n.get("runs", {})
        for batch, count in n.get("batches", {}).items():
            entry = found.setdefault(batch, {"run": runs.get(batch) or "-", "actors": 0,
                                             "nodes": []})
            entry["actors"] += count
            entry["nodes"].append(n["node"])
    table = Table(title="batches by run")
    for column in ("run", "batch", "actors", "nodes"):
        table.add_column(column)
    for batch, entry in sorted(found.items(), key=lambda kv: (kv[1]["run"], kv[0])):
        table.add_row(entry["run"], batch, f"{entry['actors']:,}", ", ".join(entry["nodes"]))
    return table


def served_table(served: list[dict[str, Any]]) -> Table:
    """The served models, one row per replica."""
    table = Table(title="served models")
    for column in ("name", "engine", "model", "replica", "node", "gpus", "url", "state",
                   "restarts"):
        table.add_column(column)
    for s in served:
        for r in s["replicas"]:
            table.add_row(s["name"], s["engine"], s["model"], r["actor"], r.get("node") or "-",
                          ",".join(map(str, r.get("gpus") or [])) or "-", r.get("url", "-"),
                          r.get("state", "?"), str(r.get("restarts", 0)))
    return table
