"""Shared fixtures: a PKI on disk (service CA, two VO CAs, certificates for every role),
and a real PostgreSQL server for the MRC's PostgreSQL store."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from xfs.client import errors as client_errors
from xfs.common import ca, pgcluster
from xfs.common.ca import CertPaths
from xfs.proto.records import Kind, Role

client_errors.STRICT = True  # a bug in a FUSE operation fails the test instead of hiding as EIO


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# `scripts/test.sh` ends an overrunning suite with SIGTERM: let pytest unwind as for Ctrl-C,
# so fixtures unmount and stop the grids they started instead of leaving them behind
signal.signal(signal.SIGTERM, _interrupted)


@dataclass(frozen=True)
class PKI:
    root: Path
    services_ca: Path
    vo_ca: Path  # VO "physics"
    other_vo_ca: Path  # VO "chem"
    mrc: CertPaths
    mrc_uuid: str

    @property
    def trust(self) -> list[Path]:
        return [self.services_ca / "ca.crt", self.vo_ca / "ca.crt", self.other_vo_ca / "ca.crt"]

    def osd(self, osd_uuid: str) -> CertPaths:
        return ca.issue_service(self.services_ca, Kind.OSD, osd_uuid, self.root / "osds")

    def user(self, name: str, role: Role = Role.STANDARD, groups: tuple[str, ...] = (),
             vo_ca: Path | None = None) -> CertPaths:
        return ca.issue_user(vo_ca or self.vo_ca, name, self.root / "users",
                             groups=groups or (name,), role=role)

    def operator(self, name: str) -> CertPaths:
        """A grid operator's certificate (``admin:<name>``, from the service CA)."""
        return ca.issue_operator(self.services_ca, name, self.root / "operators")


def make_pki(root: Path) -> PKI:
    services, vo, other = root / "services", root / "physics", root / "chem"
    ca.init_service_ca(services)
    ca.init_vo_ca(vo, "physics")
    ca.init_vo_ca(other, "chem")
    mrc_uuid = str(uuid.uuid4())
    mrc = ca.issue_service(services, Kind.MRC, mrc_uuid, root / "mrc")
    return PKI(root, services, vo, other, mrc, mrc_uuid)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------------- PostgreSQL
def pytest_report_header() -> str:
    from tests.system.grid import METADATA, conformance_metadata

    return (
        f"xfs: grids keep their metadata in {METADATA}; the conformance suite's and the "
        f"model-based test's in {conformance_metadata()}"
    )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    """A real PostgreSQL server (Debian's package) for the whole session, in a cluster of
    its own under /tmp, reached through its Unix socket; removed at the end."""
    why = pgcluster.available()
    if why:
        pytest.skip(f"no PostgreSQL here: {why}")
    root = Path(tempfile.mkdtemp(prefix="xfs-pg-", dir="/tmp"))
    os.chmod(root, 0o755)  # the server's account (root's tests: postgres) reaches its dir
    cluster = pgcluster.Cluster(root / "cluster")
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.remove()
        shutil.rmtree(root, ignore_errors=True)


def pg_schema_dsn(cluster: pgcluster.Cluster) -> str:
    """The address of a new, empty schema of the cluster's database: a store of its own."""
    name = f"t{uuid.uuid4().hex}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{cluster.dsn()}&options=-c%20search_path%3D{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's MRC store is: an SQLite file, then a PostgreSQL schema (the same
    tests over both stores)."""
    if request.param == "sqlite":
        return tmp_path / "mrc.db"
    return pg_schema_dsn(request.getfixturevalue("pg_cluster"))


@pytest.fixture(scope="module")
def conformance_store(request: pytest.FixtureRequest) -> str:
    """``xfs up --metadata`` for a grid of the conformance suite or the model-based test:
    on PostgreSQL a schema of its own in the session's cluster (one server for every
    such grid), else ``sqlite`` (see ``conformance_metadata``)."""
    from tests.system.grid import conformance_metadata

    if conformance_metadata() == "postgresql":
        return pg_schema_dsn(request.getfixturevalue("pg_cluster"))
    return "sqlite"
