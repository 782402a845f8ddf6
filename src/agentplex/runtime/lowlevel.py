"""Low-level runtime names, for transport authors and tools (not for agent code).

A transport carries :class:`Envelope` objects between runtimes and answers through their
``waiter`` (a future, or a :class:`StreamChannel` for streams); :class:`Kind` names the
envelope kinds. :data:`current_cell` tells code running inside an actor's handler which actor
that is (tracing, hubs and agents use it to name the sender). :func:`split_name` reads a
name as a :class:`~agentplex.runtime.NameRange` prefix and number. :func:`settle` waits for
the calls of a fan-out (timing out and interrupting the rest), :func:`abandon` gives them
up. :class:`GCPause` holds Python's cyclic garbage collector off while a large batch of
long-lived objects is made (fan-outs do; so does a node starting a batch of actors). What a
transport may call on
the :class:`~agentplex.runtime.Runtime` itself is listed in
:class:`~agentplex.runtime.Transport`'s module, ``agentplex/runtime/_transport.py``.
"""

from ._cell import current_cell
from ._channel import StreamChannel
from ._envelope import Envelope, Kind
from ._fanout import GCPause
from ._names import split_name
from ._settle import abandon, settle

__all__ = ["Envelope", "GCPause", "Kind", "StreamChannel", "abandon", "current_cell", "settle",
           "split_name"]
