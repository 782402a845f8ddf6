"""CurveZMQ keys, allow-lists and the rule against insecure non-loopback binds."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

__all__ = [
    "AllowList",
    "KeyPair",
    "generate_keys",
    "is_loopback",
    "keypair_from_env",
    "load_keypair",
    "load_public_key",
]

log = logging.getLogger("agentplex.bus")

ENV_PUBLIC = "AGENTPLEX_PUBLIC_KEY"
ENV_SECRET = "AGENTPLEX_SECRET_KEY"


@dataclass(frozen=True)
class KeyPair:
    """A CurveZMQ key pair, both halves Z85-encoded (40 characters)."""

    public: str
    secret: str = ""

    def __post_init__(self) -> None:
        for key in (self.public, self.secret) if self.secret else (self.public,):
            if len(key) != 40:
                raise ValueError("CURVE keys are 40 Z85 characters")

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair."""
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(public={self.public!r})"


def generate_keys(directory: str | os.PathLike[str], name: str = "agentplex") -> tuple[Path, Path]:
    """Write a new key pair as ``<name>.key`` (public) and ``<name>.key_secret`` (private).

    The files use ZeroMQ's certificate format; the secret file is readable by its owner only.
    This is what ``agentplex keys generate`` runs.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_keypair(path: str | os.PathLike[str]) -> KeyPair:
    """Read a key pair from a ``.key_secret`` certificate file."""
    public, secret = zmq.auth.load_certificate(str(path))
    if not secret:
        raise ValueError(f"{path} holds no secret key")
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def load_public_key(path: str | os.PathLike[str]) -> str:
    """Read the public key of a ``.key`` or ``.key_secret`` certificate file."""
    public, _ = zmq.auth.load_certificate(str(path))
    return str(public.decode("ascii"))


def keypair_from_env(environ: dict[str, str] | None = None) -> KeyPair | None:
    """The key pair in ``AGENTPLEX_PUBLIC_KEY`` / ``AGENTPLEX_SECRET_KEY``, if both are set."""
    env = os.environ if environ is None else environ
    public, secret = env.get(ENV_PUBLIC), env.get(ENV_SECRET)
    if not public or not secret:
        return None
    return KeyPair(public, secret)


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` is only reachable from this machine (loopback, ipc, inproc)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names, host names


class AllowList:
    """ZAP credentials provider admitting only the listed client public keys."""

    def __init__(self, keys: Iterable[str], log_every: float = 10.0) -> None:
        self.keys = set(keys)
        self.refused = 0
        self.log_every = log_every
        self._logged_at: float | None = None
        self._logged_refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key.decode("ascii", "replace") in self.keys
        if not ok:
            self.refused += 1
            now = time.monotonic()
            if self._logged_at is None or now - self._logged_at >= self.log_every:
                since = self.refused - self._logged_refused
                log.warning("refused %d client connection(s) with an unknown CURVE key "
                            "(%d in all; logged at most every %gs)", since, self.refused,
                            self.log_every)
                self._logged_at, self._logged_refused = now, self.refused
        return ok
