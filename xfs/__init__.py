"""xfs: a grid file system in the XtreemFS tradition."""

__version__ = "0.1.0"
