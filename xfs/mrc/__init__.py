"""The MRC: volumes, the namespace, file layouts, the OSD registry and XCap signing."""
