"""The xfs client: an async library, and the FUSE file system over it."""
