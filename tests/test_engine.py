"""The engine check, the provisioning guard rails, and the offline base stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.engine import (
    STAND_IN_LABEL,
    docker_hub_repository,
    engine_status,
    ensure_engine,
    offline_base_in_use,
    stand_in_bases,
)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("alpine:3.20", "library/alpine"),
        ("alpine", "library/alpine"),
        ("docker.io/library/alpine:3.20", "library/alpine"),
        ("acme/app:1", "acme/app"),
        ("alpine@sha256:" + "a" * 64, "library/alpine"),
        ("127.0.0.1:5000/alpine:3.20", None),
        ("ghcr.io/acme/app:1", None),
        ("localhost/app", None),
    ],
)
def test_docker_hub_repository(reference: str, expected: str | None) -> None:
    assert docker_hub_repository(reference) == expected


def test_stand_in_bases_follow_build_args(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG BASE=alpine:3.20\nFROM --platform=$BUILDPLATFORM ${BASE} AS prep\nRUN true\n"
        "FROM prep AS again\nFROM scratch\nCOPY --from=prep / /\n"
    )
    assert stand_in_bases(dockerfile, {}) == ["alpine:3.20"]
    assert stand_in_bases(dockerfile, {"BASE": "127.0.0.1:5000/base:1"}) == []
    assert stand_in_bases(dockerfile, {"UNRELATED": "x"}) == ["alpine:3.20"]


def test_no_engine_is_one_line_with_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "engine", "up", "--no-provision"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no Docker engine answers" in line and "engine up" in line and "buildx" in line


def test_status_reports_problems_as_json(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "engine", "status"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3
    assert '"ready": false' in result.stdout


@pytest.mark.engine
def test_ready_engine_is_left_alone_and_quickly() -> None:
    status = engine_status()
    assert status.ready, status.problems
    assert {"linux/amd64", "linux/arm64"} <= set(status.platforms)
    started = time.monotonic()
    again = ensure_engine()
    # No provisioning happened: a second look costs the checks only, not an install or a restart.
    assert time.monotonic() - started < 30
    assert again.server_version == status.server_version


@pytest.mark.engine
def test_offline_stand_in_says_what_it_is() -> None:
    if not offline_base_in_use():
        pytest.skip("Docker Hub is reachable here: builds use the real Alpine, no stand-in to check")
    for platform, arch in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        result = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--platform",
                platform,
                "alpine:3.20",
                "sh",
                "-c",
                "uname -m; cat /etc/os-release",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert result.stdout.splitlines()[0] == arch
        assert "NOT Alpine".lower() in result.stdout.lower() or "not alpine" in result.stdout.lower()
    labels = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", "alpine:3.20"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert STAND_IN_LABEL in labels
