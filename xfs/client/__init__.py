"""The xfs client: an async library, and the FUSE file system over it.

The FUSE lock hook (``xfs.client.fuse_ext``) must be loaded before pyfuse3 in any
process that mounts: each module of the client that imports pyfuse3 imports it first.
The rest of the client (credentials, the library) loads without FUSE, so the servers
and the ``xfs`` command that use it start without pyfuse3.
"""
