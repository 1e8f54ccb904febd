"""The container engine: check that one with buildx and the wanted platforms answers, else provision it.

Provisioning is for Debian hosts, as root (CI machines, fresh VMs): `provision/debian-engine.sh` installs
and starts Docker 26 with the containerd image store, buildx and QEMU. Where Docker Hub cannot be reached,
it also seeds an offline stand-in for the Alpine base: a two-platform image made from Debian's
busybox-static, served through a registry mirror. That stand-in is *not* Alpine, and every build that uses
it says so (see `offline_base_notice`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from pipeline.build import is_transient_docker_error
from pipeline.errors import EngineError
from pipeline.registry import RegistryServer, registry_answers
from pipeline.retry import with_retries

log = logging.getLogger(__name__)

REQUIRED_PLATFORMS = ("linux/amd64", "linux/arm64")
MIN_SERVER_MAJOR = 26
ENGINE_STATE = Path(os.environ.get("PIPELINE_ENGINE_STATE", "/var/lib/pipeline-engine"))
BASE_MIRROR_PORT = int(os.environ.get("PIPELINE_BASE_MIRROR_PORT", "5099"))
BASE_MIRROR_URL = f"127.0.0.1:{BASE_MIRROR_PORT}"
# The Docker Hub names the offline mirror answers for, all with the same busybox content.
STAND_IN_REPOSITORIES = {"library/alpine": ("3.20", "3", "latest")}
STAND_IN_LABEL = "dev.pipeline.base.stand-in"
STAND_IN_DESCRIPTION = "busybox-static from Debian, served as alpine by the offline mirror; not Alpine"
_DEB_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@dataclass
class EngineStatus:
    server_version: str | None = None
    buildx_version: str | None = None
    platforms: list[str] = field(default_factory=list)
    containerd_store: bool = False
    mirrors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def _check_cache() -> Path:
    from pipeline.registry import state_home

    return state_home() / "engine-check.json"


def _engine_fingerprint(info_id: str | None, version: str | None) -> str:
    # Which engine, and whether QEMU is still registered: both change on a restart or a new machine.
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    enabled = binfmt.exists() and "enabled" in binfmt.read_text(errors="replace")
    return f"{os.environ.get('DOCKER_HOST', '')}|{info_id}|{version}|{enabled}"


def engine_status(
    required_platforms: tuple[str, ...] = REQUIRED_PLATFORMS, *, use_cache: bool = False
) -> EngineStatus:
    """What the engine can do. `use_cache`: trust a full check of the same engine from the last hour for
    buildx and its platforms (two docker calls fewer on every run); `docker info` is always asked."""
    status = EngineStatus()
    if shutil.which("docker") is None:
        status.problems.append("no docker client on PATH")
        return status
    try:
        info = docker.system.info()
    except DockerException:
        status.problems.append("no Docker engine answers (docker info failed)")
        return status
    status.server_version = info.server_version
    status.containerd_store = "containerd" in str(info.driver_status or "") or info.driver == "overlayfs"
    status.mirrors = list((info.registry_config or {}).get("Mirrors") or [])
    fingerprint = _engine_fingerprint(info.id, info.server_version)
    if use_cache:
        try:
            cached = json.loads(_check_cache().read_text())
            fresh = time.time() - float(cached["at"]) < 3600 and cached["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError, TypeError):
            fresh = False
        if fresh and set(required_platforms) <= set(cached["platforms"]):
            status.buildx_version = cached["buildx"]
            status.platforms = list(cached["platforms"])
            return status
    try:
        status.buildx_version = str(docker.buildx.version()).split()[1]
        builder = docker.buildx.inspect(bootstrap=True)
    except DockerException:
        status.problems.append("docker buildx is missing")
        return status
    for node in builder.nodes or []:
        status.platforms.extend(p for p in node.platforms or [] if p not in status.platforms)
    missing = [p for p in required_platforms if p not in status.platforms]
    if missing:
        status.problems.append(
            f"the buildx builder cannot build {', '.join(missing)} (QEMU binfmt not enabled?)"
        )
    else:
        record = {"at": time.time(), "fingerprint": fingerprint, "buildx": status.buildx_version}
        with contextlib.suppress(OSError):
            _check_cache().parent.mkdir(parents=True, exist_ok=True)
            _check_cache().write_text(json.dumps({**record, "platforms": status.platforms}))
    return status


def docker_hub_reachable(timeout: float = 3.0) -> bool:
    override = os.environ.get("PIPELINE_OFFLINE")
    if override is not None:
        return override.strip().lower() in ("0", "false", "no", "")
    try:
        with socket.create_connection(("registry-1.docker.io", 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline_base_in_use(status: EngineStatus | None = None) -> bool:
    """True when Docker Hub names resolve through our busybox stand-in mirror on this engine."""
    mirrors = (status or engine_status()).mirrors
    return any(BASE_MIRROR_URL in mirror for mirror in mirrors) and registry_answers(BASE_MIRROR_URL)


def docker_hub_repository(reference: str) -> str | None:
    """`library/alpine` for `alpine:3.20` or `docker.io/library/alpine@sha256:...`; None for other registries."""
    name = reference.split("@", 1)[0]
    first, _, rest = name.partition("/")
    if rest and (first in ("docker.io", "index.docker.io", "registry-1.docker.io")):
        name = rest
    elif rest and ("." in first or ":" in first or first == "localhost"):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return name if "/" in name else f"library/{name}"


def stand_in_bases(dockerfile: Path, build_args: dict[str, str]) -> list[str]:
    """The base images of a Dockerfile that the offline mirror answers with the busybox stand-in."""
    from pipeline.dockerfile import expand, parse_file

    parsed = parse_file(dockerfile)
    arguments: dict[str, str | None] = {
        key: build_args.get(key, default) for key, default in parsed.global_args.items()
    }
    found: list[str] = []
    for stage in parsed.stages:
        base = expand(stage.base, arguments)
        if base == "scratch" or parsed.stage_by_name(base) is not None:
            continue
        if docker_hub_repository(base) in STAND_IN_REPOSITORIES and base not in found:
            found.append(base)
    return found


def offline_base_notice() -> str:
    return (
        f"offline host: FROM alpine:* resolves to a busybox stand-in through the mirror at {BASE_MIRROR_URL}; "
        "it is NOT Alpine (images get the label " + STAND_IN_LABEL + ")"
    )


def _can_provision() -> str | None:
    """None when this host can be provisioned automatically, else why not."""
    if os.geteuid() != 0:
        return "provisioning needs root"
    try:
        os_release = Path("/etc/os-release").read_text()
    except OSError:
        return "not a Debian host (/etc/os-release missing)"
    if "ID=debian" not in os_release.splitlines():
        return "automatic provisioning supports Debian only"
    return None


def _manual_instructions(problems: list[str]) -> str:
    return (
        f"{'; '.join(problems)}. Install Docker >= {MIN_SERVER_MAJOR} with buildx, the containerd image store "
        "and QEMU binfmt for arm64 (on GitHub: docker/setup-qemu-action + docker/setup-buildx-action), "
        "or run `python -m pipeline engine up` as root on Debian"
    )


def ensure_engine(*, provision: bool = True, platforms: tuple[str, ...] = REQUIRED_PLATFORMS) -> EngineStatus:
    """Make sure an engine with buildx and `platforms` answers; provision one on Debian as root.

    Only the platforms being built are required: a native amd64 runner without QEMU builds amd64 fine.
    """
    offline = not docker_hub_reachable()
    status = engine_status(platforms, use_cache=True)
    needs_mirror = offline and not offline_base_in_use(status)
    if status.ready and not needs_mirror:
        log.info(
            "engine ready for %s: Docker %s, buildx %s",
            ", ".join(platforms),
            status.server_version,
            status.buildx_version,
        )
        return status
    if not provision:
        raise EngineError(_manual_instructions(status.problems or ["the offline base mirror is not running"]))
    reason = _can_provision()
    if reason is not None:
        if status.ready:  # a working engine we may not touch: build without the stand-in
            log.warning("Docker Hub is unreachable and %s to set up the offline base mirror", reason)
            return status
        raise EngineError(_manual_instructions([*status.problems, reason]))
    _run_bootstrap(offline)
    if offline:
        ensure_base_mirror()
    status = engine_status(platforms)
    if not status.ready:
        raise EngineError(_manual_instructions(status.problems))
    if offline:
        log.warning(offline_base_notice())
    return status


def _run_bootstrap(offline: bool) -> None:
    script = resources.files("pipeline").joinpath("provision/debian-engine.sh")
    env = dict(os.environ)
    env["PIPELINE_ENGINE_STATE"] = str(ENGINE_STATE)
    if offline:
        env["PIPELINE_DAEMON_EXTRA"] = json.dumps({"registry-mirrors": [f"http://{BASE_MIRROR_URL}"]})
    with resources.as_file(script) as path:
        result = subprocess.run(["bash", str(path)], env=env, check=False)
    if result.returncode != 0:
        raise EngineError(f"engine provisioning failed (exit {result.returncode}); see the lines above")


# --- the offline base ---------------------------------------------------------------------------------------


def busybox_deb(arch: str, cache: Path) -> Path:
    """Debian's busybox-static .deb for an architecture, downloaded once into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"busybox-static_*_{arch}.deb"))
    if found:
        return found[-1]
    lists = cache / f"lists-{arch}"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    options = [
        f"-oAPT::Architecture={arch}",
        f"-oAPT::Architectures={arch}",
        f"-oDir::State::Lists={lists}",
        "-oAPT::Get::List-Cleanup=0",
    ]
    for command in (
        ["apt-get", *options, "update", "-qq"],
        ["apt-get", *options, "download", "busybox-static"],
    ):
        result = subprocess.run(command, cwd=cache, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise EngineError(f"cannot download busybox-static for {arch} from Debian: {tail}")
    found = sorted(cache.glob(f"busybox-static_*_{arch}.deb"))
    if not found:
        raise EngineError(f"apt-get download busybox-static for {arch} left no .deb in {cache}")
    return found[-1]


def busybox_rootfs_tar(arch: str, cache: Path, destination: Path) -> Path:
    """A tarball of a minimal root filesystem: busybox with every applet linked, /etc/passwd, /tmp."""
    deb = busybox_deb(arch, cache)
    with tempfile.TemporaryDirectory(prefix=f"busybox-{arch}-") as scratch:
        unpacked = Path(scratch) / "deb"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        binary = unpacked / "bin" / "busybox"
        applets = _applet_paths(binary, arch)
        with tarfile.open(destination, "w") as archive:
            for directory in (
                "bin",
                "sbin",
                "usr",
                "usr/bin",
                "usr/sbin",
                "etc",
                "tmp",
                "root",
                "home",
                "var",
                "var/www",
            ):
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if directory == "tmp" else 0o755
                archive.addfile(info)
            archive.add(binary, arcname="bin/busybox")
            for applet in applets:
                if applet == "/bin/busybox":
                    continue
                link = tarfile.TarInfo(applet.lstrip("/"))
                link.type = tarfile.SYMTYPE
                link.linkname = "/bin/busybox"
                archive.addfile(link)
            for name, text in (
                (
                    "etc/passwd",
                    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                ),
                ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
                (
                    "etc/os-release",
                    f'NAME="busybox stand-in"\nID=busybox\nPRETTY_NAME="{STAND_IN_DESCRIPTION}"\n',
                ),
            ):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, fileobj=io.BytesIO(data))
    return destination


def _applet_paths(binary: Path, arch: str) -> list[str]:
    # The applet list is the same for every architecture of one version; ask the host's own binary when the
    # foreign one cannot run (no QEMU yet), falling back to the amd64 package.
    for candidate in (binary, Path("/bin/busybox")):
        result = subprocess.run([str(candidate), "--list-full"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return ["/" + line.strip().lstrip("/") for line in result.stdout.splitlines() if line.strip()]
    raise EngineError(f"cannot list busybox applets for {arch} (is busybox-static installed?)")


def push_two_platform_busybox(
    repository: str, tags: tuple[str, ...], *, cache: Path, client: DockerClient = docker
) -> str:
    """Import busybox rootfs tarballs for amd64 and arm64 and push one index under `repository:tag`s.

    Returns the first full reference. Used for the offline mirror and for the tests' base image.
    """
    per_platform: list[str] = []
    with tempfile.TemporaryDirectory(prefix="busybox-base-") as scratch:
        for platform, arch in _DEB_ARCH.items():
            tar = busybox_rootfs_tar(arch, cache, Path(scratch) / f"{arch}.tar")
            reference = f"{repository}:busybox-{arch}"
            client.image.import_(
                tar,
                tag=reference,
                platform=platform,
                changes=[f"LABEL {STAND_IN_LABEL}={json.dumps(STAND_IN_DESCRIPTION)}", 'CMD ["/bin/sh"]'],
            )

            def push(pushed: str = reference) -> None:
                client.image.push(pushed, quiet=True)

            with_retries(push, f"push of {reference}", is_transient=is_transient_docker_error)
            per_platform.append(reference)
    targets = [f"{repository}:{tag}" for tag in tags]
    with_retries(
        lambda: client.buildx.imagetools.create(sources=per_platform, tags=targets),
        f"index {targets[0]}",
        is_transient=is_transient_docker_error,
    )
    return targets[0]


def ensure_base_mirror() -> None:
    """Run the offline mirror and make sure it holds the stand-in for every Docker Hub name we answer."""
    directory = ENGINE_STATE / "base-mirror"
    directory.mkdir(parents=True, exist_ok=True)
    if not registry_answers(BASE_MIRROR_URL):
        RegistryServer(directory=directory, port=BASE_MIRROR_PORT, detach=True).start()
        log.info("offline base mirror started on %s", BASE_MIRROR_URL)
    marker = directory / "seeded.json"
    wanted = json.dumps(STAND_IN_REPOSITORIES, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return
    for repository, tags in STAND_IN_REPOSITORIES.items():
        log.warning(
            "seeding %s/%s:%s with a busybox stand-in (not Alpine)", BASE_MIRROR_URL, repository, tags[0]
        )
        push_two_platform_busybox(f"{BASE_MIRROR_URL}/{repository}", tags, cache=ENGINE_STATE / "busybox")
    marker.write_text(wanted)


# --- CLI ---------------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    if args.action == "up":
        status = ensure_engine(provision=not args.no_provision)
        print(
            f"engine ready: Docker {status.server_version}, buildx {status.buildx_version}, "
            f"platforms {' '.join(p for p in status.platforms if p in REQUIRED_PLATFORMS)}"
        )
        if offline_base_in_use(status):
            print(offline_base_notice())
        return 0
    status = engine_status()
    print(
        json.dumps(
            {
                "ready": status.ready,
                "server_version": status.server_version,
                "buildx_version": status.buildx_version,
                "platforms": status.platforms,
                "offline_base": offline_base_in_use(status) if status.ready else False,
                "problems": status.problems,
            },
            indent=2,
        )
    )
    return 0 if status.ready else 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("engine", help="check or provision the container engine")
    parser.add_argument("action", choices=("up", "status"))
    parser.add_argument("--no-provision", action="store_true", help="only check; never install or start")
    parser.set_defaults(handler=_run)
