"""Wire-format plumbing: the codec's format version and size limit, the block validator.

Users encode and decode with :func:`agentplex.message.encode` / ``decode``; transports
and codecs read these constants underneath.
"""

from ._blocks import block_adapter
from ._codec import DEFAULT_MAX_SIZE, FORMAT_VERSION

__all__ = ["DEFAULT_MAX_SIZE", "FORMAT_VERSION", "block_adapter"]
