"""The shared runtime: framing, RPC, TLS, credentials, capabilities, config, striping maths."""
