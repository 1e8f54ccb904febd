"""What every hostile case runs against: two real registries on loopback (one open, one with htpasswd auth
standing in for Docker Hub), a two-platform busybox base, and a template git project to copy per case."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import semver

from pipeline.distribution import RegistryClient
from pipeline.engine import ENGINE_STATE, push_two_platform_busybox
from pipeline.publish import REVISION_KEY, VERSION_KEY, image_metadata
from pipeline.registry import Credentials, RegistryServer, free_port
from pipeline.signals import descendants
from tests.fixtures.faultproxy import FaultPlan, FaultProxy

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "acme/hello"
USER_ENV, TOKEN_ENV = "HOSTILE_HUB_USER", "HOSTILE_HUB_TOKEN"
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "h",
    "GIT_AUTHOR_EMAIL": "h@example.invalid",
    "GIT_COMMITTER_NAME": "h",
    "GIT_COMMITTER_EMAIL": "h@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass
class World:
    root: Path
    open_registry: RegistryServer
    auth_registry: RegistryServer
    credentials: Credentials
    base: str
    proxies: list[FaultProxy] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        pair = f"{self.credentials.username}:{self.credentials.password}"
        return [self.credentials.password, base64.b64encode(pair.encode()).decode()]

    @property
    def environ(self) -> dict[str, str]:
        return {USER_ENV: self.credentials.username, TOKEN_ENV: self.credentials.password}

    def proxy(self, upstream: str, plan: FaultPlan | None = None) -> FaultProxy:
        proxy = FaultProxy(upstream, plan).start()
        self.proxies.append(proxy)
        return proxy

    def client(self, which: str) -> RegistryClient:
        if which == "hub":
            return RegistryClient(self.auth_registry.url, self.credentials)
        return RegistryClient(self.open_registry.url)


@contextlib.contextmanager
def world(root: Path) -> Iterator[World]:
    root.mkdir(parents=True, exist_ok=True)
    credentials = Credentials("hubuser", "pw-" + secrets.token_hex(12))
    open_registry = RegistryServer(directory=root / "open", port=free_port()).start()
    auth_registry = RegistryServer(directory=root / "auth", port=free_port(), credentials=credentials).start()
    try:
        cache = ENGINE_STATE / "busybox" if (ENGINE_STATE / "busybox").is_dir() else root / "busybox"
        base = push_two_platform_busybox(f"{open_registry.url}/hostile/base", ("1",), cache=cache)
        yield World(root, open_registry, auth_registry, credentials, base)
    finally:
        for server in (open_registry, auth_registry):
            server.stop()


def registries_toml(world: World, namespace: str, which: str, hosts: dict[str, str] | None = None) -> str:
    hosts = hosts or {}
    parts = []
    if which in ("both", "hub"):
        parts.append(
            f'[[registries]]\nname = "hub"\nurl = "{hosts.get("hub", world.auth_registry.url)}/{namespace}"\n'
            f'username_env = "{USER_ENV}"\npassword_env = "{TOKEN_ENV}"\n'
        )
    if which in ("both", "private"):
        parts.append(
            f'[[registries]]\nname = "private"\nurl = "{hosts.get("private", world.open_registry.url)}/{namespace}"\n'
        )
    return "\n".join(parts)


def base_config(world: World, registries: str, extra: str = "") -> str:
    # No registry build cache: BuildKit would push it through the proxies, which speak no TLS.
    return (
        f'[build]\ncache = "none"\n\n[smoke]\ntimeout = 60\n\n[[images]]\nname = "{IMAGE}"\ncontext = "hello"\n'
        f'build_args = {{ BASE = "{world.base}" }}\n{extra}\n{registries}'
    )


def make_project(world: World, path: Path, config: str, *, tag: str | None = "v1.2.3") -> Path:
    path.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "Dockerfiles" / "hello", path / "hello")
    (path / "pipeline.toml").write_text(config)
    (path / ".gitignore").write_text("release.json\n*.env\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "project")
    if tag:
        git(path, "tag", tag)
    return path


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    tmpdir: Path
    children: list[int] = field(default_factory=list)
    signalled: int = 0
    phase_reached: bool = True


def run_cli(
    project: Path,
    args: tuple[str, ...],
    tmpdir: Path,
    env: dict[str, str],
    *,
    send: tuple[int, str, float] | None = None,
    timeout: float = 600,
) -> Run:
    """The CLI as a user runs it; `send` = (signal, report step prefix to wait for, extra delay)."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **GIT_ENV, "TMPDIR": str(tmpdir), "COLUMNS": "200", **env}
    command = [sys.executable, "-m", "pipeline", "--config", str(project / "pipeline.toml"), *args]
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=project, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    children: list[int] = []
    reached = True
    if send is not None:
        signum, phase, delay = send
        reached = _wait_for_phase(project, phase, process)
        if process.poll() is None:
            time.sleep(delay)
            children = descendants(process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += "\nHOSTILE: the run hung and was killed"
    return Run(
        args,
        process.returncode,
        stdout,
        stderr,
        time.monotonic() - started,
        tmpdir,
        children,
        send[0] if send else 0,
        reached,
    )


def _wait_for_phase(project: Path, phase: str, process: subprocess.Popen[str], limit: float = 300) -> bool:
    if phase == "import":
        time.sleep(0.15)
        return True
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            step = json.loads((project / "release.json").read_text())["step"]
            # "start" lasts a few milliseconds: any step means the run has started.
            if step.startswith(phase) or phase == "start":
                return True
        time.sleep(0.05)
    return False


# --- what is checked after every run ------------------------------------------------------------------------


def human_tags(client: RegistryClient, repository: str) -> dict[str, str | None]:
    return {
        tag: client.manifest_digest(repository, tag)
        for tag in client.tags(repository)
        if not tag.startswith("buildcache")
    }


def version_of(client: RegistryClient, repository: str, digest: str) -> str | None:
    return image_metadata(client, repository, client.get_manifest(repository, digest)).get(VERSION_KEY)


def revision_of(client: RegistryClient, repository: str, digest: str) -> str | None:
    return image_metadata(client, repository, client.get_manifest(repository, digest)).get(REVISION_KEY)


def newer(a: str | None, b: str | None) -> bool:
    try:
        return bool(a and b and semver.Version.parse(a).compare(semver.Version.parse(b)) > 0)
    except ValueError:
        return False


def still_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                alive.append(pid)
    return alive


def stop_everything(run_pids: list[int]) -> None:
    for pid in run_pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
