"""Declared resources: what an actor asks for and what a node has."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["GPU", "Bytes", "NodeSpec", "Resources", "parse_bytes"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | float | str) -> int:
    """``8GiB``, ``"512 MB"``, ``1.5GiB`` or a number of bytes, as an int of bytes."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '8GiB'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return int(value)
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read size {value!r}; write e.g. '8GiB', '512MB' or 1024")
    return int(float(match.group(1)) * _UNITS[unit])


Bytes = Annotated[int, BeforeValidator(parse_bytes)]
"""A size in bytes that also accepts strings such as ``"8GiB"``."""


class Resources(BaseModel):
    """What an actor needs, declared rather than tied to a host: ``Resources(gpus=1,
    gpu_memory="8GiB")``.

    ``gpus`` may be a fraction below 1 to share one GPU; whole numbers above 1 ask for that
    many GPUs on one node. ``gpu_memory`` is per GPU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(default=1.0, ge=0)
    memory: Bytes = 0
    gpus: float = Field(default=0.0, ge=0)
    gpu_memory: Bytes = 0

    @model_validator(mode="after")
    def _check_gpus(self) -> Resources:
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError("more than one GPU must be a whole number of GPUs")
        if self.gpu_memory and not self.gpus:
            raise ValueError("gpu_memory needs gpus > 0")
        return self


class GPU(BaseModel):
    """One GPU of a node, as reported by NVML / torch or declared."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    name: str = "GPU"
    total_memory: Bytes
    free_memory: Bytes | None = None
    uuid: str | None = None


class NodeSpec(BaseModel):
    """A node: its id, address on the bus, capacity and labels."""

    model_config = ConfigDict(extra="forbid")

    id: str
    address: str = ""
    cpus: float = Field(ge=0)
    memory: Bytes = 0
    gpus: list[GPU] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A short, JSON-able description for tables and logs."""
        return {"id": self.id, "cpus": self.cpus, "memory": self.memory,
                "gpus": [g.name for g in self.gpus], "labels": self.labels}
