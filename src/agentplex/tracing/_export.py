"""A finished run sent to the trackers people already use: :func:`export_mlflow` logs a run
folder to an mlflow tracking server or store (the optional ``mlflow`` extra)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ._errors import ExportFailed

__all__ = ["DEFAULT_MLFLOW_URI", "export_mlflow"]

DEFAULT_MLFLOW_URI = "./mlruns"
"""Where runs go when neither the caller nor ``MLFLOW_TRACKING_URI`` says."""
_STATUS = {"completed": "FINISHED", "budget": "FINISHED", "failed": "FAILED",
           "interrupted": "KILLED", "running": "FAILED"}
_BATCH = 1_000  # mlflow takes at most 1,000 metrics (and 100 parameters) per batch


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``value``'s leaves under dotted keys (lists stay whole)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def run_params(manifest: dict[str, Any]) -> dict[str, str]:
    """A run's parameters as mlflow keeps them: its config (a simulation's ``params``
    without their prefix), its seed and name, as text."""
    config = dict(manifest.get("config") or {})
    params = config.pop("params", None)
    out: dict[str, str] = {}
    for key, value in [*_flat("", config), *_flat("", params or {})]:
        if value is None or key == "":
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    if manifest.get("seed") is not None:
        out.setdefault("seed", str(manifest["seed"]))
    return {k[:250]: v[:6000] for k, v in out.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _millis(stamp: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(stamp)).timestamp() * 1000)
    except ValueError:
        return None


@contextlib.contextmanager
def _file_store_allowed(target: str) -> Iterator[None]:
    """mlflow 3 refuses a file store (a path, or a ``file:`` URI) unless
    ``MLFLOW_ALLOW_FILE_STORE`` says yes: one named here was asked for, so it is allowed
    while the run is logged (unless the environment already says otherwise)."""
    local = "://" not in target or target.startswith("file:")
    if not local or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.parquet"
    if not path.exists():
        return []
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def export_mlflow(run_dir: Path, uri: str | None = None, *,
                  experiment: str | None = None) -> str:
    """Log the run in ``run_dir`` to mlflow at ``uri`` (default: ``MLFLOW_TRACKING_URI``,
    else ``./mlruns``): its parameters, its per-round metrics (``step`` = the round), its
    totals (``total.*``: calls, tokens, cost) and every file of the folder as artifacts,
    in the experiment ``experiment`` (default: the run's name). Returns mlflow's run id.

    Raises :class:`~agentplex.tracing.ExportFailed` when mlflow is not installed, the
    folder holds no run, or the tracking store refuses.
    """
    try:
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ExportFailed("exporting to mlflow needs mlflow: pip install "
                           "'agentplex[mlflow]' (or mlflow-skinny)") from None
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportFailed(f"{run_dir} holds no readable run (manifest.json: {exc})") from None
    target = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    name = experiment or str(manifest.get("name") or "agentplex")
    started = _millis(manifest.get("started_at"))
    with _file_store_allowed(target):
        try:
            client = MlflowClient(tracking_uri=target)
            found = client.get_experiment_by_name(name)
            experiment_id = found.experiment_id if found is not None else \
                client.create_experiment(name)
            tags = {"agentplex.run_id": str(manifest.get("run_id", run_dir.name)),
                    "agentplex.status": str(manifest.get("status", "")),
                    "mlflow.source.git.commit": str(manifest.get("git_commit") or "")}
            if manifest.get("config", {}).get("scenario"):
                tags["agentplex.scenario"] = str(manifest["config"]["scenario"])
            created = client.create_run(experiment_id, start_time=started,
                                        run_name=tags["agentplex.run_id"],
                                        tags={k: v for k, v in tags.items() if v})
            run_id = created.info.run_id
            params = [Param(k, v) for k, v in run_params(manifest).items()]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i:i + 100])
            stamp = started or 0
            metrics = [Metric(str(k), value, stamp, int(row["round"]))
                       for row in _metric_rows(run_dir)
                       for k, v in row.items() if k != "round"
                       and (value := _number(v)) is not None]
            metrics += [Metric(f"total.{k}", value, stamp, 0)
                        for k, v in _flat("", manifest.get("totals") or {})
                        if (value := _number(v)) is not None]
            for i in range(0, len(metrics), _BATCH):
                client.log_batch(run_id, metrics=metrics[i:i + _BATCH])
            client.log_artifacts(run_id, str(run_dir))
            ended = _millis(manifest.get("ended_at"))
            client.set_terminated(run_id, _STATUS.get(str(manifest.get("status")), "FINISHED"),
                                  end_time=ended)
        except MlflowException as exc:
            raise ExportFailed(f"mlflow at {target} refused the run: {exc}") from None
    return str(run_id)
