"""Registry servers and the embedded local registry, for real on loopback ports."""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from pipeline.config import load_config
from pipeline.distribution import RegistryClient
from pipeline.errors import AuthError, RegistryError
from pipeline.registry import (
    Credentials,
    RegistryServer,
    ensure_registries,
    free_port,
    local_registry_down,
    local_registry_state,
    local_registry_up,
    next_free_port,
    planned_registries,
    port_is_free,
    registry_answers,
)
from tests.fixtures.engine import unavailable


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PIPELINE_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path / "state"
    local_registry_down()


def test_open_server_answers_and_stops(tmp_path: Path) -> None:
    server = RegistryServer(directory=tmp_path, port=free_port()).start()
    try:
        assert registry_answers(server.url)
        assert RegistryClient(server.url).tags("nothing/here") == []
    finally:
        server.stop()
    assert not registry_answers(server.url)


def test_auth_server_refuses_wrong_password(tmp_path: Path) -> None:
    server = RegistryServer(
        directory=tmp_path, port=free_port(), credentials=Credentials("u", "right")
    ).start()
    try:
        assert RegistryClient(server.url, Credentials("u", "right")).tags("x") == []
        with pytest.raises(AuthError, match="refused the credentials"):
            RegistryClient(server.url, Credentials("u", "wrong")).tags("x")
        with pytest.raises(AuthError, match="wants credentials"):
            RegistryClient(server.url).tags("x")
        assert "right" not in (tmp_path / "htpasswd").read_text()
    finally:
        server.stop()


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RegistryError, match=f"port {port} on 127.0.0.1 is taken"):
            RegistryServer(directory=tmp_path, port=port).start()


def test_local_registry_moves_off_a_taken_port_and_says_so(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        state = local_registry_up(taken)
    assert state.port > taken  # the next free one above (exactly: test_next_free_port_is_the_next_one...)
    assert f"port {taken} is taken" in caplog.text
    assert local_registry_state() == state
    assert local_registry_up(taken) == state  # reused, not a second one
    assert local_registry_down()
    assert local_registry_state() is None


def test_planned_registries_follow_the_running_local_registry(state_dir: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "pipeline.toml"
    config_file.write_text('[[images]]\nname = "x"\n[local_registry]\nport = 5999\n')
    config = load_config(config_file)
    assert planned_registries(config)[0].url == "127.0.0.1:5999"
    state = local_registry_up(free_port())
    assert planned_registries(config)[0].url == state.url


def test_registry_cli_up_status_down(state_dir: Path) -> None:
    env = {**os.environ, "PIPELINE_STATE_DIR": str(state_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "registry", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    port = free_port()
    up = cli("up", "--port", str(port))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"127.0.0.1:{port}"
    assert cli("status").stdout.startswith(f"running on 127.0.0.1:{port}")
    assert cli("down").returncode == 0
    status = cli("status")
    assert status.returncode == 3 and status.stdout.strip() == "not running"


def _taken_pair() -> tuple[socket.socket, int]:
    """A listening socket on a port whose next port is free (so 'the next free one' is known)."""
    while True:
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        if port < 65535 and port_is_free(port + 1):
            return holder, port
        holder.close()


def test_next_free_port_is_the_next_one_not_a_random_one(state_dir: Path) -> None:
    holder, taken = _taken_pair()
    with holder:
        assert next_free_port(taken) == taken + 1
        assert local_registry_up(taken).port == taken + 1


def test_plan_names_the_port_a_start_would_take(state_dir: Path, tmp_path: Path) -> None:
    holder, taken = _taken_pair()
    with holder:
        config_file = tmp_path / "pipeline.toml"
        config_file.write_text(f'[[images]]\nname = "x"\n[local_registry]\nport = {taken}\n')
        planned = planned_registries(load_config(config_file))[0].url
        assert planned == f"127.0.0.1:{taken + 1}"  # not the taken port: that is someone else's registry
        assert ensure_registries(load_config(config_file))[0].url == planned


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "registry", *args],
        env={**os.environ, "PIPELINE_STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_explicit_port_is_honoured_or_refused_in_one_line(state_dir: Path) -> None:
    holder, taken = _taken_pair()
    with holder:
        refused = _cli(state_dir, "up", "--port", str(taken))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert f"--port {taken}" in line and "taken" in line
    assert local_registry_state() is None  # nothing started elsewhere instead


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_out_of_range_port_is_one_line_at_once(state_dir: Path, port: str) -> None:
    result = _cli(state_dir, "up", "--port", port)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == f"error: --port {port}: give a port from 1 to 65535"


def _registry_image_from_debian(directory: Path) -> Path:
    """A rootfs with Debian's docker-registry (the program behind `registry:2`) as `registry serve`."""
    program = Path(shutil.which("docker-registry") or "/usr/bin/docker-registry")
    tar = directory / "registry-rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(program, arcname="bin/registry")
        for library in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
            archive.add(Path(library).resolve(), arcname=library.lstrip("/"))
    return tar


@pytest.mark.engine
def test_registry_container_publishes_loopback_instead_of_host_networking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_engine: DockerClient
) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("builds its registry image from Debian's amd64 docker-registry")
    if shutil.which("docker-registry") is None:
        unavailable("Debian's docker-registry (provisioned with the engine) to build a registry image")
    image = f"pipeline-test/registry:{secrets.token_hex(4)}"
    # registry:2's entrypoint runs `registry serve CONFIG` for the arguments `serve CONFIG`; so does this one.
    docker_engine.image.import_(
        _registry_image_from_debian(tmp_path), tag=image, changes=['ENTRYPOINT ["/bin/registry"]']
    )
    monkeypatch.setenv("PIPELINE_REGISTRY_PROGRAM", "")
    monkeypatch.setenv("PIPELINE_REGISTRY_IMAGE", image)
    server = RegistryServer(directory=tmp_path / "data", port=free_port())
    try:
        server.start()
        assert server.container is not None and server.pid is None
        assert registry_answers(server.url)
        host_config = docker_engine.container.inspect(server.container).host_config
        assert host_config.network_mode != "host"
        bindings = (host_config.port_bindings or {})["5000/tcp"] or []
        assert [(b.host_ip, b.host_port) for b in bindings] == [("127.0.0.1", str(server.port))]
    finally:
        server.stop()
        docker_engine.image.remove(image, force=True)
    assert not registry_answers(server.url)
