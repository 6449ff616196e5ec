"""The OSD: object storage on local disk, XCap checks, replication, heartbeats."""
