"""The xfs client: an async library, and the FUSE file system over it."""

# The FUSE lock hook must be loaded before pyfuse3 in any process that mounts (see
# xfs.client.fuse_ext); importing it here makes every import of the client do so.
from xfs.client import fuse_ext as _lock_hook  # noqa: F401
