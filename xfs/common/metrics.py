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
  being filled, dead and alive OSDs; an OSD's free and total bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(service: str, host: str, port: int) -> None:
    """Name this process's service and, with a port, expose the metrics at
    ``http://host:port/metrics`` (a daemon thread)."""
    SERVICE[0] = service
    if port:
        start_http_server(port, addr=host)
