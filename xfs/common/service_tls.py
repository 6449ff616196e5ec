"""The TLS material of one service process: its contexts and its trust store."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from xfs.common import tls
from xfs.common.config import TLSConfig
from xfs.common.identity import TrustStore, load_credential
from xfs.proto.records import Identity


@dataclass(frozen=True)
class ServiceTLS:
    server: ssl.SSLContext
    client: ssl.SSLContext
    trust: TrustStore
    identity: Identity  # this service's own

    @classmethod
    def load(cls, config: TLSConfig) -> ServiceTLS:
        trust = TrustStore.load(config.trust)
        bundle = trust.ssl_cafile_bundle()
        cred = load_credential(config.cert, config.key)
        return cls(
            server=tls.server_context(config.cert, config.key, bundle),
            client=tls.client_context(config.cert, config.key, bundle),
            trust=trust,
            identity=cred.identity,
        )
