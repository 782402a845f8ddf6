"""Plumbing for code that launches engines itself (the cluster's engine actors), and the
allocator call the server uses to give memory back."""

from ._engines import free_port, health_path
from ._memory import MemoryTrimmer, malloc_trim

__all__ = ["MemoryTrimmer", "free_port", "health_path", "malloc_trim"]
