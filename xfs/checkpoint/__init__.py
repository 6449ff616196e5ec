"""Checkpoint sets on a mounted xfs volume (docs/checkpoints.md).

The application-level API::

    from xfs.checkpoint import CheckpointSet

    ckpt = CheckpointSet.open("/home/alice/ckpt/run7", create=True)
    with ckpt.begin("app", {"application": "mysim"}) as version:
        with version.open("state.npy") as f:
            f.write(state_bytes)
        version.add(Path("params.json"))  # linked to the parent's copy if unchanged
        version.commit()                  # durable at the set's policy, then published
    newest = ckpt.version_path(ckpt.latest())
"""

from xfs.checkpoint.manifest import FileEntry, Manifest, ManifestError
from xfs.checkpoint.sets import CheckpointError, CheckpointSet, Draft, VersionFile

__all__ = [
    "CheckpointError",
    "CheckpointSet",
    "Draft",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "VersionFile",
]
