"""``state_dict()`` / ``load_state_dict()`` for agents and everything they own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["StateModule"]


class StateModule:
    """An object whose state can be saved to and restored from a JSON-compatible dict.

    Attributes registered with :meth:`register_state` are saved; attributes that are
    themselves :class:`StateModule` instances are saved recursively under their name.
    """

    def _state_registry(self) -> dict[str, tuple[Callable[[Any], Any] | None,
                                                 Callable[[Any], Any] | None]]:
        registry = self.__dict__.get("_state_attrs")
        if registry is None:
            registry = {}
            object.__setattr__(self, "_state_attrs", registry)
        return registry

    def register_state(
        self,
        attr: str,
        to_json: Callable[[Any], Any] | None = None,
        from_json: Callable[[Any], Any] | None = None,
    ) -> None:
        """Save attribute ``attr`` in :meth:`state_dict`, converted by ``to_json`` /
        ``from_json`` when it is not JSON-compatible as it is."""
        if not hasattr(self, attr):
            raise AttributeError(f"{type(self).__name__} has no attribute {attr!r}")
        self._state_registry()[attr] = (to_json, from_json)

    def state_dict(self) -> dict[str, Any]:
        """The saved state: registered attributes and nested state modules."""
        state: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, StateModule):
                state[key] = value.state_dict()
        for attr, (to_json, _) in self._state_registry().items():
            value = getattr(self, attr)
            state[attr] = to_json(value) if to_json is not None else value
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore what :meth:`state_dict` saved. With ``strict``, missing keys raise."""
        for key, value in vars(self).items():
            if isinstance(value, StateModule):
                if key in state:
                    value.load_state_dict(state[key], strict=strict)
                elif strict:
                    raise KeyError(f"state of {type(self).__name__} lacks {key!r}")
        for attr, (_, from_json) in self._state_registry().items():
            if attr not in state:
                if strict:
                    raise KeyError(f"state of {type(self).__name__} lacks {attr!r}")
                continue
            value = state[attr]
            setattr(self, attr, from_json(value) if from_json is not None else value)
