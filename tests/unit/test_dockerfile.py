"""The image builds what the README says, checked without Docker: the files the
Dockerfile copies before `pip install .` are enough to build xfs, C extension included
(a Dockerfile without setup.py once built an image whose mount could not start)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def copied_before_install() -> list[str]:
    """The sources of every COPY before the RUN that installs xfs."""
    sources: list[str] = []
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")  # continued lines
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["RUN"] and "pip install" in line:
            return sources
        if words[:1] == ["COPY"]:
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    raise AssertionError("the Dockerfile never runs pip install")


def test_the_image_gets_what_the_build_needs(tmp_path: Path) -> None:
    if shutil.which("pkg-config") is None:
        pytest.skip("needs pkg-config and libfuse3-dev (scripts/bootstrap.sh installs them)")
    context = tmp_path / "src"
    context.mkdir()
    sources = copied_before_install()
    assert {"pyproject.toml", "setup.py", "xfs"} <= set(sources), sources
    for name in sources:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, context / name, ignore=shutil.ignore_patterns("*.so", "__pycache__")
            )
        else:
            shutil.copy(src, context / name)
    out = tmp_path / "built"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out)],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert list(out.rglob("_fuse_ext*.so")), "the extension was not built"
    compose = (REPO / "docker-compose.yml").read_text()
    assert "build:" in compose  # the compose file builds this image
