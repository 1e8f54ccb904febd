"""Registries: the configured ones, and registry servers this project starts itself.

A `RegistryServer` is the distribution registry (the program behind the `registry:2` image) on a loopback
port: the embedded default when the config names no registry, the offline base-image mirror, and the test
fixtures (one open, one with htpasswd auth). It runs the `docker-registry` program where it is installed and
the `registry:2` image otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import bcrypt

from pipeline.config import LoadedConfig, RegistryConfig, load_config
from pipeline.errors import ConfigError, RegistryError
from pipeline.process import pid_exists

log = logging.getLogger(__name__)

LOCAL_REGISTRY_NAME = "local"
REGISTRY_PROGRAM = "docker-registry"
REGISTRY_IMAGE = "registry:2"
REGISTRY_LABEL = "dev.pipeline.registry"  # on the registry containers we start: the port


def _registry_program() -> str | None:
    # PIPELINE_REGISTRY_PROGRAM="" runs the image even where the program is installed.
    program = os.environ.get("PIPELINE_REGISTRY_PROGRAM", REGISTRY_PROGRAM)
    return program if program and shutil.which(program) else None


def _registry_image() -> str:
    return os.environ.get("PIPELINE_REGISTRY_IMAGE") or REGISTRY_IMAGE


_READY_TIMEOUT = 20.0
_CONTAINER_PORT = 5000


def state_home() -> Path:
    """Where the embedded registry keeps its data between runs (survives reboots; not in the repo)."""
    base = (
        os.environ.get("PIPELINE_STATE_DIR")
        or os.environ.get("XDG_STATE_HOME")
        or str(Path.home() / ".local/state")
    )
    return Path(base) / "image-pipeline"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    if preferred is not None and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def next_free_port(preferred: int, tries: int = 100) -> int:
    """`preferred` if free, else the next free port above it (5000 taken: 5001), so the choice is predictable."""
    for port in range(preferred, min(preferred + tries, 65536)):
        if port_is_free(port):
            return port
    raise RegistryError(
        f"ports {preferred}-{min(preferred + tries, 65536) - 1} on 127.0.0.1 are all taken; "
        "set [local_registry] port or pass --port to choose another range"
    )


def valid_port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{what} {value}: give a port from 1 to 65535")
    return value


def registry_answers(url: str, timeout: float = 2.0) -> bool:
    """True when a distribution registry answers /v2/ at host:port (401 counts: it is there, it wants auth)."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/", timeout=timeout) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as error:
        return error.code == 401
    except OSError:
        return False


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass
class RegistryServer:
    """One distribution registry on 127.0.0.1, started and stopped by us.

    `detach=True` puts the server in its own session so that it outlives this process (the embedded
    registry and the base mirror); otherwise it dies with us (test fixtures).
    """

    directory: Path
    port: int
    credentials: Credentials | None = None
    detach: bool = False
    pid: int | None = None
    container: str | None = None
    # The registry image when starting the container pulled it: it was not the user's, so stop() removes it.
    pulled_image: str | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryServer:
        if not port_is_free(self.port):
            raise RegistryError(
                f"port {self.port} on 127.0.0.1 is taken; stop what listens there or choose another port"
            )
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        if self.credentials is not None:
            hashed = bcrypt.hashpw(self.credentials.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text(f"{self.credentials.username}:{hashed}\n")
            htpasswd.chmod(0o600)
            config["auth"] = {"htpasswd": {"realm": "pipeline-registry", "path": str(htpasswd)}}
        program = _registry_program()
        if program is not None:
            self._start_program(program, config)
        else:
            self._start_container(config)
        self._wait_ready()
        return self

    def _start_program(self, program: str, config: dict[str, object]) -> None:
        config_file = self.directory / "config.yml"
        # JSON is YAML: no need for a YAML writer here.
        config_file.write_text(json.dumps(config))
        log_file = (self.directory / "registry.log").open("ab")
        process = subprocess.Popen(  # the registry program itself, not a docker command line
            [program, "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=self.detach,
        )
        log_file.close()
        self.pid = process.pid

    def _start_container(self, config: dict[str, object]) -> None:
        # In the container the paths are the container's: mount our folder at the same path. The registry
        # listens on all of the container's addresses and only 127.0.0.1 of the host is published: host
        # networking would not reach the host on Docker Desktop (macOS, Windows).
        config_file = self.directory / "config.yml"
        config_file.write_text(json.dumps({**config, "http": {"addr": f":{_CONTAINER_PORT}"}}))
        from python_on_whales import docker
        from python_on_whales.exceptions import DockerException

        name = f"pipeline-registry-{self.port}"
        image = _registry_image()
        try:
            present = docker.image.exists(image)
            docker.run(
                image,
                ["serve", str(config_file)],
                name=name,
                detach=True,
                remove=True,
                publish=[(f"127.0.0.1:{self.port}", _CONTAINER_PORT)],
                volumes=[(str(self.directory), str(self.directory))],
                labels={REGISTRY_LABEL: str(self.port)},
            )
        except DockerException as error:
            raise RegistryError(
                f"cannot start a registry: neither the {REGISTRY_PROGRAM!r} program (Debian package "
                f"docker-registry) nor the {image} image is available ({_last_line(error)})"
            ) from None
        self.container = name
        self.pulled_image = None if present else image

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if registry_answers(self.url, timeout=1.0):
                return
            if self.pid is not None and not _alive(self.pid):
                break
            time.sleep(0.1)
        self.stop()
        raise RegistryError(
            f"the registry on {self.url} did not answer within {_READY_TIMEOUT:.0f}s; see {self.directory / 'registry.log'}"
        )

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            self.pid = None
        if self.container is not None:
            from python_on_whales import docker
            from python_on_whales.exceptions import DockerException

            # registry:2 declares VOLUME /var/lib/registry: without volumes=True its anonymous volume outlives
            # the container (--rm does not apply to a forced removal). Only our container's volume goes.
            with contextlib.suppress(DockerException):
                docker.container.remove(self.container, force=True, volumes=True)
            self.container = None
        if self.pulled_image is not None:
            from python_on_whales import docker
            from python_on_whales.exceptions import DockerException

            # Not forced: another container (another port's registry) still running from it keeps it.
            with contextlib.suppress(DockerException):
                docker.image.remove(self.pulled_image)
            self.pulled_image = None


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child (a detached server from an earlier run): ask the kernel instead
    return pid_exists(pid)


def _last_line(error: Exception) -> str:
    lines = str(getattr(error, "stderr", "") or "").strip().splitlines()
    return lines[-1] if lines else str(error).splitlines()[0]


# --- the embedded local registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalRegistryState:
    port: int
    pid: int | None
    container: str | None
    pulled_image: str | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


def _local_dir() -> Path:
    return state_home() / "local-registry"


def _state_file() -> Path:
    return _local_dir() / "state.json"


def _recorded_state() -> LocalRegistryState | None:
    """What the state file says was started, whether or not it still runs."""
    try:
        raw = json.loads(_state_file().read_text())
        return LocalRegistryState(
            port=int(raw["port"]),
            pid=raw.get("pid"),
            container=raw.get("container"),
            pulled_image=raw.get("pulled_image"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def local_registry_state() -> LocalRegistryState | None:
    """The embedded registry if it is running and answering, else None (a stale state file is ignored)."""
    state = _recorded_state()
    if state is None or (state.pid is not None and not _alive(state.pid)):
        return None
    return state if registry_answers(state.url) else None


def local_registry_up(preferred_port: int = 5000, *, exact: bool = False) -> LocalRegistryState:
    """Start the embedded registry (or reuse the running one).

    Port `preferred_port`, or the next free one above it; `exact` (an explicit --port) takes that port or
    fails, and a running registry on another port is then an error rather than silently reused.
    """
    valid_port(preferred_port, "--port" if exact else "[local_registry] port")
    running = local_registry_state()
    if running is not None:
        if exact and running.port != preferred_port:
            raise RegistryError(
                f"the local registry already runs on {running.url}; stop it (`pipeline registry down`) "
                f"to start it on port {preferred_port}"
            )
        return running
    if exact:
        if not port_is_free(preferred_port):
            raise RegistryError(
                f"--port {preferred_port}: 127.0.0.1:{preferred_port} is taken; stop what listens there "
                "or choose another port"
            )
        port = preferred_port
    else:
        port = next_free_port(preferred_port)
    if port != preferred_port:
        log.warning("port %d is taken: the local registry uses port %d instead", preferred_port, port)
    directory = _local_dir()
    directory.mkdir(parents=True, exist_ok=True)
    server = RegistryServer(directory=directory, port=port, detach=True).start()
    state = LocalRegistryState(
        port=port, pid=server.pid, container=server.container, pulled_image=server.pulled_image
    )
    _state_file().write_text(json.dumps(asdict(state)))
    log.info("local registry running on %s (data in %s)", state.url, directory / "storage")
    return state


def local_registry_down() -> bool:
    """Stop the embedded registry; True when it was running. What it left (a container that stopped
    answering, the image we pulled for it) is removed either way; its data stays."""
    running = local_registry_state() is not None
    state = _recorded_state()
    with contextlib.suppress(FileNotFoundError):
        _state_file().unlink()
    if state is None or (not running and state.container is None and state.pulled_image is None):
        return running
    RegistryServer(
        directory=_local_dir(),
        port=state.port,
        pid=state.pid if running else None,  # a dead server's pid may be someone else's process by now
        container=state.container,
        pulled_image=state.pulled_image,
    ).stop()
    return running


def local_registry_config(port: int) -> RegistryConfig:
    return RegistryConfig(name=LOCAL_REGISTRY_NAME, url=f"127.0.0.1:{port}")


def planned_registries(config: LoadedConfig) -> tuple[RegistryConfig, ...]:
    """Where a release publishes: the configured registries, else the embedded local one.

    No side effects: the running local registry's port if there is one, else the port that starting it
    would take now (the configured one, or the next free one above it).
    """
    if config.pipeline.registries:
        return config.pipeline.registries
    running = local_registry_state()
    if running is not None:
        return (local_registry_config(running.port),)
    return (local_registry_config(next_free_port(config.pipeline.local_registry.port)),)


def ensure_registries(config: LoadedConfig) -> tuple[RegistryConfig, ...]:
    """Like planned_registries, but starts the embedded registry when it is the one to publish to."""
    if config.pipeline.registries:
        return config.pipeline.registries
    return (local_registry_config(local_registry_up(config.pipeline.local_registry.port).port),)


# --- CLI ---------------------------------------------------------------------------------------------------


def _preferred_port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return valid_port(int(args.port), "--port")
    try:
        return load_config(args.config).pipeline.local_registry.port
    except ConfigError:  # no config here: the registry does not need one
        return 5000


def _run(args: argparse.Namespace) -> int:
    if args.action == "up":
        state = local_registry_up(_preferred_port(args), exact=args.port is not None)
        print(state.url)
    elif args.action == "down":
        print("local registry stopped" if local_registry_down() else "local registry was not running")
    else:
        running = local_registry_state()
        print(f"running on {running.url} (data in {_local_dir() / 'storage'})" if running else "not running")
        return 0 if running else 3
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("registry", help="manage the embedded local registry")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="this port exactly (default: [local_registry] port or 5000, else the next free one)",
    )
    parser.set_defaults(handler=_run)
