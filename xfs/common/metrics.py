"""Prometheus metrics of one xfs process (MRC, OSD or mount), with prometheus_client.

Every process has one service, so the metrics live in the client library's default
registry; ``serve`` exposes them over HTTP (``metrics_port`` in the configuration, 0:
off; on ``metrics_host``, loopback by default). What is measured:

- ``xfs_requests_total{service, method, outcome}`` and ``xfs_request_seconds{service,
  method}``: every RPC a server answers (outcome ``ok`` or the errno's name), and every
  FUSE operation a mount serves (method ``fuse.<op>``);
- ``xfs_bytes_total{service, op}``: bytes an OSD stored or served (``write``, ``read``,
  ``forward``), bytes a mount's users wrote and read;
- gauges a service registers with ``gauge``: the MRC's replicas below factor, replicas
  being filled, dead and alive OSDs; an OSD's free and total bytes;
- ``xfs_quota_{limit,used}_{bytes,files}{volume, principal}`` (the MRC, ``quotas``): every
  quota and what it limits holds now (principal "" is the volume's own quota).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from xfs.proto.errors import XfsError

REQUESTS = Counter(
    "xfs_requests", "Requests answered, by method and outcome.", ["service", "method", "outcome"]
)
SECONDS = Histogram(
    "xfs_request_seconds",
    "Time to answer a request, by method.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BYTES = Counter("xfs_bytes", "Bytes of file data, by operation.", ["service", "op"])
_GAUGES: dict[str, Gauge] = {}

SERVICE = ["xfs"]  # set by ``serve``: the label of this process's figures


# the labelled children, looked up once: these are called on every request
_REQUEST: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_DATA: dict[tuple[str, str], Any] = {}


def request(method: str, outcome: str, seconds: float) -> None:
    key = (SERVICE[0], method, outcome)
    pair = _REQUEST.get(key)
    if pair is None:
        pair = _REQUEST[key] = (REQUESTS.labels(*key), SECONDS.labels(key[0], method))
    pair[0].inc()
    pair[1].observe(seconds)


def data(op: str, n: int) -> None:
    key = (SERVICE[0], op)
    child = _DATA.get(key)
    if child is None:
        child = _DATA[key] = BYTES.labels(*key)
    child.inc(n)


def gauge(name: str, help: str, value: Callable[[], float]) -> None:
    """A gauge ``xfs_<name>{service}`` read from ``value()`` at each scrape (which runs in
    the HTTP thread: ``value`` must only read a figure the service keeps up to date)."""
    g = _GAUGES.get(name)
    if g is None:
        g = _GAUGES[name] = Gauge(f"xfs_{name}", help, ["service"])
    g.labels(SERVICE[0]).set_function(value)


# (volume, principal, files limit, bytes limit, files used, bytes used) of every quota
QuotaRows = Callable[[], Iterable[tuple[str, str, int | None, int | None, int, int]]]


class _Quotas(Collector):
    def __init__(self, rows: QuotaRows) -> None:
        self._rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["service", "volume", "principal"]
        families = {
            name: GaugeMetricFamily(f"xfs_quota_{name}", text, labels=labels)
            for name, text in (
                ("limit_files", "A quota's limit on inodes."),
                ("limit_bytes", "A quota's limit on bytes (every replica counts)."),
                ("used_files", "Inodes a quota holds now."),
                ("used_bytes", "Bytes a quota holds now (every replica counts)."),
            )
        }
        for volume, principal, files, nbytes, used_files, used_bytes in self._rows():
            at = [SERVICE[0], volume, principal]
            if files is not None:
                families["limit_files"].add_metric(at, files)
            if nbytes is not None:
                families["limit_bytes"].add_metric(at, nbytes)
            families["used_files"].add_metric(at, used_files)
            families["used_bytes"].add_metric(at, used_bytes)
        yield from families.values()


_QUOTAS: list[_Quotas] = []


def quotas(rows: QuotaRows) -> None:
    """Report every quota at each scrape from ``rows()`` (run in the HTTP thread: it must
    be safe there; the MRC's store is)."""
    if _QUOTAS:
        _QUOTAS[0]._rows = rows
        return
    _QUOTAS.append(_Quotas(rows))
    REGISTRY.register(_QUOTAS[0])


def serve(service: str, host: str, port: int) -> None:
    """Name this process's service and, with a port, expose the metrics at
    ``http://host:port/metrics`` (a daemon thread)."""
    SERVICE[0] = service
    if port:
        try:
            start_http_server(port, addr=host)
        except OSError as e:
            raise XfsError(
                e.errno or errno.EADDRINUSE,
                f"metrics on {host}:{port}: {e.strerror or e} (metrics_port in the configuration)",
            ) from None
