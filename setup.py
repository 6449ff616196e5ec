"""Builds xfs's one C extension; all project metadata lives in pyproject.toml."""

import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(*args: str) -> list[str]:
    """Flags from `pkg-config` for fuse3, split like a shell would."""
    try:
        out = subprocess.run(
            ["pkg-config", *args, "fuse3"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            "xfs: pkg-config could not find fuse3; install libfuse3-dev and pkg-config "
            "(scripts/bootstrap.sh does)"
        ) from exc
    return shlex.split(out)


setup(
    ext_modules=[
        Extension(
            "xfs.client._fuse_ext",
            sources=["xfs/client/_fuse_ext.c"],
            extra_compile_args=[*pkg_config("--cflags"), "-Wall", "-Wextra"],
            extra_link_args=pkg_config("--libs"),
            libraries=["dl"],
        )
    ],
)
