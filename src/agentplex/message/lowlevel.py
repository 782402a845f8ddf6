"""Wire-format plumbing: the codec's format version and size limit, the block validator,
the codec of one value per target (a fan-out's own messages), a fast deep copy.

Users encode and decode with :func:`agentplex.message.encode` / ``decode``; transports
and codecs read these constants underneath.
"""

from ._blocks import block_adapter
from ._codec import DEFAULT_MAX_SIZE, FORMAT_VERSION
from ._copy import deep_copy
from ._each import decode_each, encode_each

__all__ = ["DEFAULT_MAX_SIZE", "FORMAT_VERSION", "block_adapter", "decode_each",
           "deep_copy", "encode_each"]
