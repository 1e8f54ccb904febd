"""The container engine: check that one with buildx and the wanted platforms answers, pick the builder,
and provision an engine only where that is safe.

Provisioning is for Debian hosts, as root (CI machines, fresh VMs): `provision/debian-engine.sh` installs
and starts Docker 26 with the containerd image store, buildx and QEMU, and records that it did
(`ENGINE_STATE/installed.json`). It runs implicitly only where no engine is installed at all, and otherwise
only on `pipeline engine up`; an engine the pipeline did not install is never stopped, restarted or
reconfigured: the pipeline says what to change instead.

Where the engine's own builder cannot build several platforms (the `docker` driver with the classic image
store), a `docker-container` builder of ours (`OWN_BUILDER`) is used when its BuildKit image can be had.

The offline stand-in for the Alpine base (a two-platform busybox image from Debian, served through a
registry mirror) is only set up on explicit request (`PIPELINE_OFFLINE_BASE=1` or `engine up
--offline-base`). It is *not* Alpine: every build that uses it says so, and a release refuses to push an
image built on it to any registry that is not on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from pipeline.errors import EngineError
from pipeline.registry import RegistryServer, registry_answers
from pipeline.retry import is_transient_docker_error, with_retries

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
OFFLINE_BASE_ENV = "PIPELINE_OFFLINE_BASE"
# What provision/debian-engine.sh writes when it installed the engine: the proof that it is ours to manage.
INSTALL_MARKER = "installed.json"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
OWN_BUILDER = "pipeline-multiarch"
BUILDKIT_IMAGE = os.environ.get("PIPELINE_BUILDKIT_IMAGE", "moby/buildkit:buildx-stable-1")
_DEB_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@dataclass
class EngineStatus:
    server_version: str | None = None
    buildx_version: str | None = None
    platforms: list[str] = field(default_factory=list)
    containerd_store: bool = False
    mirrors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    driver: str | None = None  # of the builder that was inspected
    builder: str | None = None  # the builder builds use; None: buildx's current one

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
    required_platforms: tuple[str, ...] = REQUIRED_PLATFORMS,
    *,
    use_cache: bool = False,
    builder: str | None = None,
) -> EngineStatus:
    """What the engine can do. `use_cache`: trust a full check of the same engine from the last hour for
    buildx and its platforms (two docker calls fewer on every run); `docker info` is always asked.
    `builder`: inspect that buildx builder instead of the current one."""
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
    fingerprint = f"{_engine_fingerprint(info.id, info.server_version)}|{builder}"
    if use_cache:
        try:
            cached = json.loads(_check_cache().read_text())
            fresh = time.time() - float(cached["at"]) < 3600 and cached["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError, TypeError):
            fresh = False
        if fresh and set(required_platforms) <= set(cached["platforms"]):
            status.buildx_version = cached["buildx"]
            status.platforms = list(cached["platforms"])
            status.driver = cached.get("driver")
            return status
    try:
        status.buildx_version = str(docker.buildx.version()).split()[1]
    except DockerException:
        status.problems.append("docker buildx is missing")
        return status
    try:
        inspected = docker.buildx.inspect(builder, bootstrap=True)
    except DockerException as error:
        status.problems.append(f"buildx builder {builder or '(current)'} does not start: {_last_line(error)}")
        return status
    status.driver = inspected.driver
    for node in inspected.nodes or []:
        status.platforms.extend(p for p in node.platforms or [] if p not in status.platforms)
    missing = [p for p in required_platforms if p not in status.platforms]
    if missing:
        status.problems.append(
            f"the buildx builder cannot build {', '.join(missing)} (QEMU binfmt not enabled?)"
        )
    else:
        record = {
            "at": time.time(),
            "fingerprint": fingerprint,
            "buildx": status.buildx_version,
            "driver": status.driver,
        }
        with contextlib.suppress(OSError):
            _check_cache().parent.mkdir(parents=True, exist_ok=True)
            _check_cache().write_text(json.dumps({**record, "platforms": status.platforms}))
    return status


def offline_base_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """The offline stand-in only on explicit request: never decided by a failed connection."""
    value = (os.environ if environ is None else environ).get(OFFLINE_BASE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


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


def _docker_host(environ: Mapping[str, str] | None = None) -> str:
    """The engine the docker CLI talks to: DOCKER_HOST, else a non-default context (named, not resolved)."""
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"]
    context = environ.get("DOCKER_CONTEXT")
    if not context:
        config_dir = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
        with contextlib.suppress(OSError, ValueError, AttributeError):
            context = json.loads((config_dir / "config.json").read_text()).get("currentContext")
    return f"context:{context}" if context and context != "default" else DEFAULT_DOCKER_HOST


def engine_is_ours(environ: Mapping[str, str] | None = None) -> bool:
    """True when the engine this process talks to is the one provision/debian-engine.sh installed."""
    if _docker_host(environ) != DEFAULT_DOCKER_HOST:
        return False  # the script only ever installs the engine on the default socket
    try:
        marker = json.loads((ENGINE_STATE / INSTALL_MARKER).read_text())
    except (OSError, ValueError):
        # Installed before the record existed: our private trixie downloads are the trace (the script
        # then writes the record).
        return any((ENGINE_STATE / "trixie-apt" / "debs").glob("docker.io_*.deb"))
    return isinstance(marker, dict)


def engine_installed() -> bool:
    """Some engine is installed on this host (a daemon binary, a socket, or one that answers elsewhere)."""
    return shutil.which("dockerd") is not None or Path("/var/run/docker.sock").exists()


@dataclass(frozen=True)
class ProvisionDecision:
    """Whether provision/debian-engine.sh may run, and if not, the one line that says why."""

    run: bool
    refusal: str | None = None


def provision_decision(
    *,
    answering: bool,
    installed: bool,
    ours: bool,
    explicit: bool,
    needs: list[str],
    can_provision: str | None,
) -> ProvisionDecision:
    """Pure: provision only where no engine is installed at all, or where the engine is ours and either
    it is down or `engine up` was asked for. An engine the pipeline did not install is never touched."""
    what = "; ".join(needs)
    if answering and not ours:
        return ProvisionDecision(
            False,
            f"{what}. This engine was not installed by the pipeline, so it changes nothing: change it "
            "yourself (see README, 'Host changes')",
        )
    if installed and not ours and not answering:
        return ProvisionDecision(
            False,
            f"{what}. A Docker engine is installed but not running, and was not installed by the pipeline: start it "
            "yourself (e.g. `systemctl start docker`)",
        )
    if answering and not explicit:
        return ProvisionDecision(
            False, f"{what}. Run `python -m pipeline engine up` to fix the engine it installed"
        )
    if can_provision is not None:
        return ProvisionDecision(False, _manual_instructions([*needs, can_provision]))
    return ProvisionDecision(True)


def ensure_engine(
    *,
    provision: bool = True,
    explicit: bool = False,
    builder: str | None = None,
    offline_base: bool | None = None,
    platforms: tuple[str, ...] = REQUIRED_PLATFORMS,
) -> EngineStatus:
    """Make sure an engine with buildx and `platforms` answers and pick the builder builds use. Only the
    platforms being built are required: a native amd64 runner without QEMU builds amd64 fine.

    `explicit`: `engine up` was asked for (may fix an engine the pipeline installed). `builder`: the
    `[build] builder` of the config. `offline_base`: set up the stand-in (default: PIPELINE_OFFLINE_BASE).
    """
    offline = offline_base_wanted() if offline_base is None else offline_base
    if builder is not None:
        known = _list_builders()
        missing = choose_builder(BuilderFacts(builder, None, False, known)).refusal
        if missing is not None:
            raise EngineError(missing)
    status = engine_status(platforms, use_cache=True, builder=builder)
    needs = list(status.problems)
    if offline and status.ready and not offline_base_in_use(status):
        if any(BASE_MIRROR_URL in m for m in status.mirrors):
            ensure_base_mirror()  # configured earlier, its registry is just not running: no engine change
        elif offline_base is None and not engine_is_ours():
            # Asked for by the environment (this project's nox sessions) on an engine we may not change.
            log.warning(
                "%s=1, but this engine was not installed by the pipeline: no offline stand-in here, "
                "base images resolve as they are",
                OFFLINE_BASE_ENV,
            )
            offline = False
        else:
            needs.append(f"{OFFLINE_BASE_ENV}=1 asks for the offline base, whose mirror is not configured")
    if not needs:
        return _with_builder(status, builder, platforms)
    answering = status.server_version is not None
    decision = provision_decision(
        answering=answering,
        installed=engine_installed(),
        ours=engine_is_ours(),
        explicit=explicit,
        needs=needs,
        can_provision=_can_provision(),
    )
    if not provision:
        raise EngineError(_manual_instructions(needs))
    if not decision.run:
        raise EngineError(decision.refusal or _manual_instructions(needs))
    _run_bootstrap(offline)
    if offline:
        ensure_base_mirror()
    status = engine_status(platforms, builder=builder)
    if not status.ready:
        raise EngineError(_manual_instructions(status.problems))
    if offline:
        log.warning(offline_base_notice())
    return _with_builder(status, builder, platforms)


def _run_bootstrap(offline: bool) -> None:
    script = resources.files("pipeline").joinpath("provision/debian-engine.sh")
    env = dict(os.environ)
    env["PIPELINE_ENGINE_STATE"] = str(ENGINE_STATE)
    env["PIPELINE_DOCKER_HOST"] = _docker_host()
    if offline:
        env["PIPELINE_DAEMON_EXTRA"] = json.dumps({"registry-mirrors": [f"http://{BASE_MIRROR_URL}"]})
    with resources.as_file(script) as path:
        result = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("engine: error:")]
        detail = errors[-1].removeprefix("engine: error: ") if errors else f"exit {result.returncode}"
        raise EngineError(f"engine provisioning failed: {detail}")


# --- the builder -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuilderFacts:
    """What the builder choice depends on, gathered from the engine (see `builder_facts`)."""

    configured: str | None  # [build] builder
    driver: str | None  # of buildx's current builder
    containerd_store: bool
    builders: Mapping[str, str]  # every builder buildx knows: name -> driver
    buildkit_image: bool | None = None  # BUILDKIT_IMAGE is in the engine or can be pulled (None: not asked)


@dataclass(frozen=True)
class BuilderChoice:
    name: str | None = None  # None: buildx's current builder
    create: bool = False  # create OWN_BUILDER (docker-container driver) first
    needs_buildkit_image: bool = False  # the choice depends on BUILDKIT_IMAGE: ask for it, then decide again
    refusal: str | None = None


def choose_builder(facts: BuilderFacts) -> BuilderChoice:
    """Pure: which builder can export multi-platform OCI layouts without changing the user's engine."""
    if facts.configured is not None:
        if facts.configured in facts.builders:
            return BuilderChoice(name=facts.configured)
        known = ", ".join(sorted(facts.builders)) or "none"
        return BuilderChoice(
            refusal=f"[build] builder = {facts.configured!r} is not a buildx builder here (`docker buildx ls` "
            f"lists: {known}); create it or change the name"
        )
    if facts.driver != "docker" or facts.containerd_store:
        return BuilderChoice()  # docker-container, remote, kubernetes, or docker with the containerd store
    if facts.builders.get(OWN_BUILDER) == "docker-container":
        return BuilderChoice(name=OWN_BUILDER)
    if facts.buildkit_image is None:
        return BuilderChoice(needs_buildkit_image=True)
    if facts.buildkit_image:
        return BuilderChoice(name=OWN_BUILDER, create=True)
    return BuilderChoice(
        refusal="the engine's `docker` builder uses the classic image store, which can neither export the "
        f"OCI layouts a release pushes nor build several platforms, and the BuildKit image {BUILDKIT_IMAGE} for a builder of our own cannot be "
        "pulled; turn on the containerd image store (daemon.json: "
        '"features": {"containerd-snapshotter": true}, then restart it), load that image '
        "into the engine, or name a working builder in [build] builder"
    )


def _list_builders() -> dict[str, str]:
    try:
        return {str(b.name): str(b.driver) for b in docker.buildx.list()}
    except DockerException:
        return {}


def _buildkit_image_available() -> bool:
    if docker.image.exists(BUILDKIT_IMAGE):
        return True
    try:
        docker.image.pull(BUILDKIT_IMAGE, quiet=True)
    except DockerException as error:
        log.info("cannot pull %s: %s", BUILDKIT_IMAGE, _last_line(error))
        return False
    return True


def select_builder(status: EngineStatus, configured: str | None) -> str | None:
    """The builder to build with (None: the current one), creating ours if needed; EngineError otherwise."""
    current_is_enough = configured is None and (status.driver != "docker" or status.containerd_store)
    builders = {} if current_is_enough else _list_builders()  # one docker call fewer on the common path
    facts = BuilderFacts(configured, status.driver, status.containerd_store, builders)
    choice = choose_builder(facts)
    if choice.needs_buildkit_image:
        choice = choose_builder(dataclasses.replace(facts, buildkit_image=_buildkit_image_available()))
    if choice.refusal is not None:
        raise EngineError(choice.refusal)
    if choice.create:
        # Host networking for BuildKit's container: bases, caches and the embedded registry on 127.0.0.1.
        log.warning(
            "the engine cannot build several platforms itself: creating buildx builder %s", OWN_BUILDER
        )
        docker.buildx.create(
            name=OWN_BUILDER,
            driver="docker-container",
            driver_options={"image": BUILDKIT_IMAGE, "network": "host"},
            bootstrap=True,
        )
    return choice.name


def _with_builder(
    status: EngineStatus, configured: str | None, platforms: tuple[str, ...] = REQUIRED_PLATFORMS
) -> EngineStatus:
    status.builder = select_builder(status, configured)
    log.info(
        "engine ready for %s: Docker %s, buildx %s, builder %s",
        ", ".join(platforms),
        status.server_version,
        status.buildx_version,
        status.builder or "(current)",
    )
    return status


def remove_own_builder() -> bool:
    if OWN_BUILDER not in _list_builders():
        return False
    docker.buildx.remove(OWN_BUILDER)
    return True


def _last_line(error: DockerException) -> str:
    lines = [line for line in (error.stderr or str(error)).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no detail"


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
            raise EngineError(f"`{' '.join(command)}` failed (exit {result.returncode}): {tail}")
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
    try:
        with tempfile.TemporaryDirectory(prefix="busybox-base-") as scratch:
            for platform, arch in _DEB_ARCH.items():
                tar = busybox_rootfs_tar(arch, cache, Path(scratch) / f"{arch}.tar")
                reference = f"{repository}:busybox-{arch}"
                per_platform.append(reference)
                client.image.import_(
                    tar,
                    tag=reference,
                    platform=platform,
                    changes=[f"LABEL {STAND_IN_LABEL}={json.dumps(STAND_IN_DESCRIPTION)}", 'CMD ["/bin/sh"]'],
                )

                def push(pushed: str = reference) -> None:
                    client.image.push(pushed, quiet=True)

                with_retries(push, f"push of {reference}", is_transient=is_transient_docker_error)
        targets = [f"{repository}:{tag}" for tag in tags]
        with_retries(
            lambda: client.buildx.imagetools.create(sources=per_platform, tags=targets),
            f"index {targets[0]}",
            is_transient=is_transient_docker_error,
        )
    finally:
        # The per-platform imports only carry the layers to the registry: the index there is what is used.
        # They were the engine's copies under names only this function makes; left, they were two images a run.
        for reference in per_platform:
            with contextlib.suppress(DockerException):
                client.image.remove(reference)
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


def is_loopback(host: str) -> bool:
    """`127.0.0.1:5000`, `localhost`, `[::1]:5000`: a registry only this machine can reach."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


def stand_in_refusal(image: str, bases: list[str], registry_hosts: dict[str, str]) -> str | None:
    """Pure: the one line refusing to publish an image built on the stand-in to a non-loopback registry."""
    remote = [name for name, host in registry_hosts.items() if not is_loopback(host)]
    if not bases or not remote:
        return None
    return (
        f"{image}: base {', '.join(bases)} resolves to the offline busybox stand-in (NOT Alpine) on this engine; "
        f"refusing to push it to registry {remote[0]} ({registry_hosts[remote[0]]}). Publish from an engine "
        "that reaches Docker Hub (`pipeline engine down --offline-base` removes the stand-in), or pin the base "
        "to a registry you trust"
    )


def remove_offline_base() -> list[str]:
    """Stop the stand-in mirror and delete what it holds; drop it from daemon.json only on our own engine
    (it takes effect at that engine's next start: the engine is not restarted under running builds)."""
    done: list[str] = []
    directory = ENGINE_STATE / "base-mirror"
    state = directory / "config.yml"
    if registry_answers(BASE_MIRROR_URL):
        # Ours only: the program serving our config file, or our container (where the program is missing).
        server = RegistryServer(directory=directory, port=BASE_MIRROR_PORT)
        pids = _registry_pids(state)
        for pid in pids:
            RegistryServer(directory=directory, port=BASE_MIRROR_PORT, pid=pid).stop()
        if not pids and docker.container.exists(f"pipeline-registry-{BASE_MIRROR_PORT}"):
            server.container = f"pipeline-registry-{BASE_MIRROR_PORT}"
            server.stop()
        done.append(
            f"stopped the stand-in mirror on {BASE_MIRROR_URL}"
            if not registry_answers(BASE_MIRROR_URL)
            else f"left the registry on {BASE_MIRROR_URL} running: it is not the pipeline's"
        )
    for image in docker.image.list(filters={"label": STAND_IN_LABEL}):
        for tag in image.repo_tags:
            if docker_hub_repository(tag) in STAND_IN_REPOSITORIES:
                docker.image.remove(tag)
                done.append(f"removed the stand-in image {tag}")
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
        done.append(f"removed {directory}")
    daemon_json = Path(os.environ.get("PIPELINE_DAEMON_JSON", "/etc/docker/daemon.json"))
    if engine_is_ours() and drop_mirror(daemon_json, f"http://{BASE_MIRROR_URL}"):
        done.append(f"removed the mirror from {daemon_json} (applies at the engine's next start)")
    return done


def _registry_pids(config_file: Path) -> list[int]:
    """Processes serving the mirror's config file (ours: `docker-registry serve CONFIG`)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if str(config_file).encode() in argv and b"serve" in argv:
                found.append(int(proc.name))
    return found


def drop_mirror(daemon_json: Path, mirror: str) -> bool:
    """Remove one registry mirror from a daemon.json, keeping everything else; True when it was there."""
    try:
        settings = json.loads(daemon_json.read_text())
    except (OSError, ValueError):
        return False
    mirrors = [m for m in settings.get("registry-mirrors", []) if m.rstrip("/") != mirror.rstrip("/")]
    if mirrors == settings.get("registry-mirrors", []):
        return False
    if mirrors:
        settings["registry-mirrors"] = mirrors
    else:
        del settings["registry-mirrors"]
    daemon_json.write_text(json.dumps(settings, indent=2) + "\n")
    return True


# --- CLI ---------------------------------------------------------------------------------------------------


def _builder_setting(args: argparse.Namespace) -> str | None:
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    try:
        return load_config(args.config).pipeline.build.builder
    except ConfigError:  # no config here: the engine does not need one
        return None


def _run(args: argparse.Namespace) -> int:
    if args.action == "up":
        status = ensure_engine(
            provision=not args.no_provision,
            explicit=not args.no_provision,
            builder=_builder_setting(args),
            offline_base=True if args.offline_base else None,
        )
        print(
            f"engine ready: Docker {status.server_version}, buildx {status.buildx_version}, "
            f"builder {status.builder or '(current)'}, "
            f"platforms {' '.join(p for p in status.platforms if p in REQUIRED_PLATFORMS)}"
        )
        if offline_base_in_use(status):
            print(offline_base_notice())
        return 0
    if args.action == "down":
        done = ["removed buildx builder " + OWN_BUILDER] if remove_own_builder() else []
        if args.offline_base:
            done.extend(remove_offline_base())
        print("; ".join(done) if done else "nothing of the pipeline's to remove")
        return 0
    status = engine_status()
    print(
        json.dumps(
            {
                "ready": status.ready,
                "server_version": status.server_version,
                "buildx_version": status.buildx_version,
                "driver": status.driver,
                "containerd_store": status.containerd_store,
                "installed_by_pipeline": engine_is_ours(),
                "platforms": status.platforms,
                "offline_base": offline_base_in_use(status) if status.ready else False,
                "problems": status.problems,
            },
            indent=2,
        )
    )
    return 0 if status.ready else 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("engine", help="check, provision or clean up the container engine")
    parser.add_argument("action", choices=("up", "status", "down"))
    parser.add_argument("--no-provision", action="store_true", help="only check; never install or start")
    parser.add_argument(
        "--offline-base",
        action="store_true",
        help="up: serve a busybox stand-in for alpine (offline hosts; NOT Alpine); down: remove it",
    )
    parser.set_defaults(handler=_run)
