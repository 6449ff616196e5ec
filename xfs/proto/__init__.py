"""Data only: typed records, request/response types, method table, error codes.

Nothing in this package does I/O.
"""
