"""The xfs command: one thin module per command group."""
