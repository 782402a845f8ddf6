"""Plumbing shared between agents and orchestration: the topic naming of hub broadcasts."""

from ._agent import HUB_TOPIC_PREFIX

__all__ = ["HUB_TOPIC_PREFIX"]
