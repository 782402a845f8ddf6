"""Plumbing for code that launches engines itself (the cluster's engine actors)."""

from ._engines import free_port, health_path

__all__ = ["free_port", "health_path"]
