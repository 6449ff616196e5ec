"""``xfs ca``: the click group, driven in-process."""

from __future__ import annotations

import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from xfs.cli.ca import ca
from xfs.common.identity import TrustStore, load_credential
from xfs.proto.records import Kind, Role


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(ca, [str(a) for a in args])


def test_init_issue_show(tmp_path: Path) -> None:
    vo_dir, svc_dir, out = tmp_path / "vo", tmp_path / "svc", tmp_path / "out"
    r = run("init", "--dir", vo_dir, "--vo", "physics")
    assert r.exit_code == 0, r.output
    assert (vo_dir / "ca.crt").exists() and (vo_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    assert run("init-services", "--dir", svc_dir).exit_code == 0

    r = run(
        "issue-user",
        "--ca",
        vo_dir,
        "--name",
        "alice",
        "--group",
        "users",
        "--group",
        "cms@physics",
        "--role",
        "advanced",
        "--days",
        "30",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    cred = load_credential(out / "alice.crt", out / "alice.key")
    assert cred.identity.principal == "alice@physics"
    assert cred.identity.role is Role.ADVANCED
    assert cred.identity.groups == ("users@physics", "cms@physics")  # primary first

    u = str(uuid.uuid4())
    r = run(
        "issue-service",
        "--ca",
        svc_dir,
        "--kind",
        "osd",
        "--uuid",
        u,
        "--host",
        "10.1.2.3",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    osd = load_credential(out / f"osd-{u}.crt", out / f"osd-{u}.key")
    assert osd.identity.principal == f"osd:{u}" and osd.identity.kind is Kind.OSD

    trust = TrustStore.load([vo_dir / "ca.crt", svc_dir / "ca.crt"])
    assert len(trust.anchors) == 2

    r = run("show", out / "alice.crt")
    assert r.exit_code == 0, r.output
    assert "principal:   alice@physics" in r.output
    assert "groups:      users@physics, cms@physics" in r.output
    assert "role:        advanced" in r.output
    assert f"sha256:{cred.fingerprint.hex()}" in r.output
    r = run("show", vo_dir / "ca.crt")
    assert r.exit_code == 0 and "kind:        ca" in r.output


def _one_line_error(r: Result, needle: str) -> None:
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert needle in lines[0], r.output


def test_errors_are_one_line(tmp_path: Path) -> None:
    vo_dir = tmp_path / "vo"
    assert run("init", "--dir", vo_dir, "--vo", "physics").exit_code == 0
    _one_line_error(run("init", "--dir", vo_dir, "--vo", "physics"), "exists")
    _one_line_error(run("init", "--dir", tmp_path / "x", "--vo", "Physics"), "VO")
    _one_line_error(
        run("issue-user", "--ca", vo_dir, "--name", "../evil", "--out", tmp_path / "o"),
        "principal",
    )
    _one_line_error(
        run(
            "issue-user",
            "--ca",
            vo_dir,
            "--name",
            "bob",
            "--group",
            "users@other",
            "--out",
            tmp_path / "o",
        ),
        "group",
    )
    assert not (tmp_path / "o" / "bob.crt").exists()
    _one_line_error(
        run(
            "issue-service",
            "--ca",
            vo_dir,
            "--kind",
            "osd",
            "--uuid",
            str(uuid.uuid4()),
            "--out",
            tmp_path / "o",
        ),
        "service-ca",
    )
    _one_line_error(
        run("issue-user", "--ca", tmp_path / "nope", "--name", "bob", "--out", tmp_path / "o"),
        "cannot read",
    )
    (tmp_path / "junk.crt").write_text("hello\n")
    _one_line_error(run("show", tmp_path / "junk.crt"), "not a PEM certificate")
    r = run("issue-user", "--ca", vo_dir, "--name", "bob", "--role", "root", "--out", tmp_path)
    assert r.exit_code == 2  # click's own usage error
