"""Deploy: run the digest that passed the gate on Docker Swarm, as a health-gated rolling update.

For each `[[deploy]]` entry the service (or the service of a stack) is pointed at `repo@sha256:...`, never a
moving tag, with Swarm's own update config (order, parallelism, delay, monitor window, failure action
`rollback`). Everything that can refuse a deploy is checked first and read-only: a swarm manager answers,
the digest is in the registry, the image has a HEALTHCHECK when health gating is on, and the service is ours
(the label below, or the stack's namespace). Then Swarm rolls the tasks; we judge the rollout from the Swarm
API only (task states, the digest in each task's spec, container health), never from traffic, and when the
update fails or our timeout passes, Swarm's rollback runs and the command fails naming each replica's digest.

python-on-whales wraps `docker service create/update` without the replicas, publish, update and rollback
flags; those calls go through its own command runner with the same client config (host, context, config
dir), so DOCKER_HOST=ssh://... reaches a remote manager the same way. `docker stack deploy` is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run as run_docker
from rich.table import Table

from pipeline.config import (
    DeployConfig,
    DeployPort,
    ImageConfig,
    LoadedConfig,
    RegistryConfig,
    UpdatePolicy,
    load_config,
)
from pipeline.dockerconfig import isolated_docker_config
from pipeline.errors import ConfigError, DeployError, RegistryError
from pipeline.publish import login_all, registry_client, repository_path
from pipeline.registry import planned_registries
from pipeline.report import short_digest, wide_console

log = logging.getLogger(__name__)

OWNER_LABEL = "dev.pipeline.deploy.environment"  # on services `pipeline deploy` created; nothing else is ours
STACK_LABEL = "com.docker.stack.namespace"  # set by `docker stack deploy` on a stack's services
DEFAULT_REPORT = Path("release.json")  # where `pipeline release` writes (pipeline.release.DEFAULT_REPORT)
POLL_SECONDS = 0.5


# --- what to deploy ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One `[[deploy]]` entry, resolved: the image, the registry the nodes pull from, the digest."""

    entry: DeployConfig
    image: ImageConfig
    registry: RegistryConfig
    digest: str
    compose: Path | None = None

    @property
    def name(self) -> str:
        return self.entry.swarm_service

    @property
    def repository(self) -> str:
        """The repository path inside the registry (what its API wants)."""
        return repository_path(self.registry, self.image.name)

    @property
    def reference(self) -> str:
        return f"{self.registry.repository(self.image.name)}@{self.digest}"


def resolve_targets(
    config: LoadedConfig, environments: Sequence[str], digests: Mapping[str, str], report: Path | None
) -> list[Target]:
    """The entries named (all when none), each with the digest given, else the tested one from the report."""
    entries = config.pipeline.deploy
    if not entries:
        raise ConfigError(f"{config.path}: no [[deploy]] entries; add one (see README, Deploy)")
    known = [e.environment for e in entries]
    for wanted in environments:
        if wanted not in known:
            raise ConfigError(
                f"{config.path}: no [[deploy]] environment {wanted!r} (declared: {', '.join(known)})"
            )
    registries = planned_registries(config)
    targets = []
    for index, entry in enumerate(entries):
        if environments and entry.environment not in environments:
            continue
        where = f"{config.path}: deploy[{index}]"
        try:
            image = config.image(entry.image)
        except ConfigError:
            raise ConfigError(f"{where}.image: no [[images]] named {entry.image!r}") from None
        registry = _registry(registries, entry, where)
        digest = digests.get(image.name) or released_digest(report or DEFAULT_REPORT, image.name)
        compose = (config.root / entry.compose).resolve() if entry.compose else None
        targets.append(Target(entry, image, registry, digest, compose))
    return targets


def _registry(registries: Sequence[RegistryConfig], entry: DeployConfig, where: str) -> RegistryConfig:
    if entry.registry is None:
        return registries[0]
    for registry in registries:
        if registry.name == entry.registry:
            return registry
    names = ", ".join(r.name for r in registries)
    raise ConfigError(f"{where}.registry: no registry named {entry.registry!r} (declared: {names})")


def released_digest(report: Path, image: str) -> str:
    """The index digest `pipeline release` published for `image` after its smoke tests passed."""
    try:
        document = json.loads(report.read_text())
    except (OSError, ValueError):
        raise DeployError(
            f"{report}: no readable release report; run `pipeline release` first or pass --digest {image}=sha256:..."
        ) from None
    outcome = next((i for i in document.get("images", []) if i.get("name") == image), None)
    if outcome is None or not outcome.get("index_digest"):
        raise DeployError(
            f"{report}: no digest for {image}; release it first or pass --digest {image}=sha256:..."
        )
    if document.get("status") != "published" or outcome.get("smoke_passed") is not True:
        raise DeployError(
            f"{report}: {image} {outcome['index_digest']} did not pass the release gate (status "
            f"{document.get('status')!r}); only a tested digest is deployed"
        )
    return str(outcome["index_digest"])


# --- the part of a service spec we own: desired vs current --------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    image: str
    replicas: int
    ports: tuple[str, ...] | None  # "8080:8080/tcp host", "*:8080/tcp host"; None: the compose file's
    update: tuple[tuple[str, str], ...]
    owner: str | None
    stop_grace_period: str = "10s"


def _port_text(target: int, published: int | None, protocol: str, mode: str) -> str:
    return f"{published or '*'}:{target}/{protocol} {mode}"


def _update_items(policy: UpdatePolicy) -> tuple[tuple[str, str], ...]:
    return (
        ("parallelism", str(policy.parallelism)),
        ("delay", f"{policy.delay:g}s"),
        ("order", policy.order),
        ("monitor", f"{policy.monitor:g}s"),
        ("failure_action", "rollback"),
        ("max_failure_ratio", f"{policy.max_failure_ratio:g}"),
    )


def desired_state(target: Target) -> ServiceState:
    entry = target.entry
    ports: tuple[str, ...] | None = tuple(
        sorted(_port_text(p.target, p.published, p.protocol, p.mode) for p in entry.ports)
    )
    if entry.stack is not None and not entry.ports:
        ports = None  # a stack without `ports` in [[deploy]] keeps the compose file's, which we do not diff
    return ServiceState(
        image=target.reference,
        replicas=entry.replicas,
        ports=ports,
        update=_update_items(entry.update),
        owner=entry.stack or entry.environment,
        stop_grace_period=f"{entry.stop_grace_period:g}s",
    )


def current_state(service: Mapping[str, Any], stack: str | None) -> ServiceState:
    """The same fields read from `docker service inspect` (the Swarm API's Service object)."""
    spec = service.get("Spec", {})
    update = spec.get("UpdateConfig") or {}
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    labels = spec.get("Labels") or {}
    container = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
    return ServiceState(
        image=container.get("Image", ""),
        replicas=int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)),
        ports=tuple(
            sorted(
                _port_text(
                    p["TargetPort"],
                    p.get("PublishedPort"),
                    p.get("Protocol", "tcp"),
                    p.get("PublishMode", "ingress"),
                )
                for p in ports
            )
        ),
        update=(
            ("parallelism", str(update.get("Parallelism", 1))),
            ("delay", f"{update.get('Delay', 0) / 1e9:g}s"),
            ("order", update.get("Order", "stop-first")),
            ("monitor", f"{update.get('Monitor', 5e9) / 1e9:g}s"),
            ("failure_action", update.get("FailureAction", "pause")),
            ("max_failure_ratio", f"{update.get('MaxFailureRatio', 0):g}"),
        ),
        owner=labels.get(STACK_LABEL) if stack else labels.get(OWNER_LABEL),
        stop_grace_period=f"{container.get('StopGracePeriod', 10e9) / 1e9:g}s",
    )


def spec_diff(current: ServiceState | None, desired: ServiceState) -> list[str]:
    """Lines for `--dry-run`: `field: old -> new`, or every field with `+` when the service is created."""
    if current is None:
        lines = [f"+ image: {desired.image}", f"+ replicas: {desired.replicas}"]
        lines.append(f"+ stop_grace_period: {desired.stop_grace_period}")
        lines += [f"+ port: {port}" for port in desired.ports or ()]
        return lines + [f"+ update.{key}: {value}" for key, value in desired.update]
    lines = []
    if current.image != desired.image:
        lines.append(f"~ image: {current.image} -> {desired.image}")
    if current.replicas != desired.replicas:
        lines.append(f"~ replicas: {current.replicas} -> {desired.replicas}")
    if desired.ports is not None and current.ports is not None:
        lines += [f"- port: {port}" for port in current.ports if port not in desired.ports]
        lines += [f"+ port: {port}" for port in desired.ports if port not in current.ports]
    if current.stop_grace_period != desired.stop_grace_period:
        lines.append(f"~ stop_grace_period: {current.stop_grace_period} -> {desired.stop_grace_period}")
    old = dict(current.update)
    lines += [
        f"~ update.{key}: {old.get(key)} -> {value}" for key, value in desired.update if old.get(key) != value
    ]
    return lines


def digest_of(image: str) -> str | None:
    return image.rsplit("@", 1)[1] if "@" in image else None


# --- the Swarm API, read ------------------------------------------------------------------------------------


def swarm_call(client: DockerClient, *args: str) -> str:
    """One docker CLI call through python-on-whales' runner and client config; failures become DeployError."""
    try:
        return run_docker([*client.client_config.docker_cmd, *args], return_stderr=False)
    except DockerException as error:
        lines = (error.stderr or str(error)).strip().splitlines()
        raise DeployError(f"docker {' '.join(args[:2])}: {lines[-1] if lines else error}") from None


def inspect_service(client: DockerClient, name: str) -> dict[str, Any] | None:
    if not client.service.exists(name):
        return None
    found: list[dict[str, Any]] = json.loads(swarm_call(client, "service", "inspect", name))
    return found[0]


@dataclass(frozen=True)
class Replica:
    """One task of the service as the Swarm API reports it, with its container's health when we can see it."""

    slot: int
    task: str
    node: str
    state: str
    desired: str
    digest: str | None
    health: str  # healthy / unhealthy / starting / none (no HEALTHCHECK) / ? (container on another node)
    error: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def healthy(self) -> bool:
        # Swarm holds a task in `starting` until its container's HEALTHCHECK first passes (moby/moby#24545),
        # so a running task on a node we cannot inspect did pass it once.
        return self.running and self.health in ("healthy", "none", "?")


def service_replicas(client: DockerClient, name: str) -> list[Replica]:
    """Every task Swarm keeps for the service (current and history), newest first per slot."""
    ids = swarm_call(client, "service", "ps", "--quiet", "--no-trunc", name).split()
    if not ids:
        return []
    tasks = _inspect_found(client, "task", ids)
    containers = [
        t["Status"]["ContainerStatus"]["ContainerID"]
        for t in tasks
        if t.get("Status", {}).get("State") == "running"
        and (t["Status"].get("ContainerStatus") or {}).get("ContainerID")
    ]
    health = _container_health(client, containers)
    replicas = [_replica(task, health) for task in tasks]
    return sorted(replicas, key=lambda r: (r.slot, r.desired != "running", r.task))


def _inspect_found(client: DockerClient, kind: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    """`docker inspect` of many objects in one call, keeping those found: Swarm prunes old tasks while we
    look, and a container on another node is not visible from this engine."""
    try:
        text = run_docker(
            [*client.client_config.docker_cmd, "inspect", "--type", kind, *ids], return_stderr=False
        )
    except DockerException as error:
        text = error.stdout or "[]"
    found: list[dict[str, Any]] = json.loads(text or "[]")
    return found


def _container_health(client: DockerClient, containers: list[str]) -> dict[str, str]:
    health: dict[str, str] = {}
    for item in _inspect_found(client, "container", containers) if containers else []:
        state = item.get("State", {})
        health[item["Id"]] = (
            (state.get("Health") or {}).get("Status", "none") if state.get("Running") else "exited"
        )
    return health


def _replica(task: Mapping[str, Any], health: Mapping[str, str]) -> Replica:
    status = task.get("Status", {})
    container = (status.get("ContainerStatus") or {}).get("ContainerID", "")
    image = task.get("Spec", {}).get("ContainerSpec", {}).get("Image", "")
    return Replica(
        slot=int(task.get("Slot", 0)),
        task=task["ID"][:12],
        node=task.get("NodeID", "")[:12],
        state=status.get("State", "?"),
        desired=task.get("DesiredState", "?"),
        digest=digest_of(image),
        health=health.get(container, "?") if status.get("State") == "running" else "-",
        error=status.get("Err", ""),
    )


def running_digests(replicas: Sequence[Replica]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for replica in replicas:
        if replica.running:
            counts[replica.digest or "?"] = counts.get(replica.digest or "?", 0) + 1
    return counts


def converged(replicas: Sequence[Replica], digest: str, wanted: int, health_gate: bool) -> bool:
    """Exactly `wanted` tasks run, all on `digest`, and (gated) all healthy."""
    running = [r for r in replicas if r.running]
    return (
        len(running) == wanted
        and all(r.digest == digest for r in running)
        and (not health_gate or all(r.healthy for r in running))
    )


def every_slot_failed(replicas: Sequence[Replica], digest: str, wanted: int) -> Replica | None:
    """A failed task of a new service when each of its slots has failed on `digest` and none runs (or None).

    Swarm would restart them forever; with no previous version to fall back to, that is the verdict."""
    failed = [r for r in replicas if r.digest == digest and r.state in ("failed", "rejected")]
    slots = {r.slot for r in failed}
    if wanted and len(slots) >= wanted and not any(r.running for r in replicas):
        return failed[0]
    return None


def replica_summary(replicas: Sequence[Replica]) -> str:
    running = [r for r in replicas if r.running]
    if not running:
        return "no replica running"
    return ", ".join(f"slot {r.slot} {short_digest(r.digest or '?')} {r.health}" for r in running)


# --- checks before anything changes -------------------------------------------------------------------------


def require_swarm_manager(client: DockerClient) -> None:
    try:
        swarm = client.info().swarm
    except DockerException as error:
        raise DeployError(
            f"no container engine answers ({error.stderr or error}); check DOCKER_HOST"
        ) from None
    if swarm is None or swarm.local_node_state != "active":
        raise DeployError(
            "this engine is not in a swarm; run `docker swarm init` on the manager, or point DOCKER_HOST at one "
            "(e.g. ssh://user@manager)"
        )
    if not swarm.control_available:
        raise DeployError("this engine is a swarm worker, not a manager; point DOCKER_HOST at a manager node")


def require_digest_and_health(target: Target, environ: Mapping[str, str] | None = None) -> None:
    """The digest is in the registry the nodes pull from; with health gating, every platform has a HEALTHCHECK."""
    client = registry_client(target.registry, environ)
    where = f"deploy {target.entry.environment}"
    try:
        if client.manifest_digest(target.repository, target.digest) is None:
            raise DeployError(
                f"{where}: {target.reference} is not in registry {target.registry.name}; release it there first "
                "or give the digest `pipeline release` printed"
            )
        if not target.entry.health_gate or compose_healthcheck(target):
            return
        for platform, manifest_digest in client.platform_digests(target.repository, target.digest).items():
            manifest = client.get_manifest(target.repository, manifest_digest).document
            config = client.get_blob_json(target.repository, manifest["config"]["digest"])
            test = (config.get("config") or {}).get("Healthcheck", {}).get("Test") or ["NONE"]
            if test[0] == "NONE":
                raise DeployError(
                    f"{where}: {target.image.name} ({platform}) has no HEALTHCHECK, so a rollout cannot be "
                    "health-gated; add one to its Dockerfile or set health_gate = false for this entry"
                )
    except RegistryError as error:
        raise DeployError(f"{where}: {error}") from None


def compose_healthcheck(target: Target) -> bool:
    """A stack's compose file may give the service its own healthcheck, which then replaces the image's."""
    if target.compose is None:
        return False
    healthcheck = pinned_compose(target)["services"][target.entry.service].get("healthcheck") or {}
    return bool(healthcheck.get("test")) and not healthcheck.get("disable", False)


def require_ownership(target: Target, service: Mapping[str, Any] | None) -> None:
    if service is None:
        return
    labels = service.get("Spec", {}).get("Labels") or {}
    name, entry = target.name, target.entry
    stack = labels.get(STACK_LABEL)
    if entry.stack is not None:
        if stack != entry.stack:
            holder = f"stack {stack!r}" if stack else "no stack (created by hand or another tool)"
            raise DeployError(
                f"deploy {entry.environment}: service {name} belongs to {holder}, not stack {entry.stack!r}; "
                "rename the stack or the service in [[deploy]]"
            )
        return
    if stack is not None:
        raise DeployError(
            f"deploy {entry.environment}: service {name} belongs to stack {stack!r}; deploy it with stack = "
            f"{stack!r} and its compose file, or pick another service name"
        )
    owner: str | None = labels.get(OWNER_LABEL)
    if owner != entry.environment:
        what = f"environment {owner!r}" if owner else "something else (it has no label " + OWNER_LABEL + ")"
        raise DeployError(
            f"deploy {entry.environment}: service {name} exists and belongs to {what}; pick another service "
            f"name, or adopt it with `docker service update --label-add {OWNER_LABEL}={entry.environment} {name}`"
        )


def preflight(
    client: DockerClient, target: Target, environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """Every read-only check; returns the current service (None when it will be created)."""
    require_swarm_manager(client)
    if target.compose is not None:
        pinned_compose(target)  # the compose file parses and names the service
    require_digest_and_health(target, environ)
    service = inspect_service(client, target.name)
    require_ownership(target, service)
    for port in target.entry.ports:
        if port.mode == "host" and port.published and target.entry.update.order == "start-first":
            log.warning(
                "%s: start-first with host port %s: a new task needs a node where that port is free",
                target.name,
                port.published,
            )
    return service


# --- changing the swarm -------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"


def policy_args(policy: UpdatePolicy) -> list[str]:
    """Update and rollback config flags. The rollback uses the same order, so start-first keeps capacity."""
    args = []
    for phase in ("update", "rollback"):
        args += [
            f"--{phase}-parallelism", str(policy.parallelism),
            f"--{phase}-delay", _seconds(policy.delay if phase == "update" else 0),
            f"--{phase}-order", policy.order,
            f"--{phase}-monitor", _seconds(policy.monitor),
            f"--{phase}-max-failure-ratio", f"{policy.max_failure_ratio:g}",
        ]  # fmt: skip
    return [*args, "--update-failure-action", "rollback", "--rollback-failure-action", "pause"]


def _publish(port: DeployPort) -> str:
    fields = [f"target={port.target}", f"protocol={port.protocol}", f"mode={port.mode}"]
    return ",".join(([f"published={port.published}"] if port.published else []) + fields)


def create_args(target: Target) -> list[str]:
    entry = target.entry
    args = ["service", "create", "--detach", "--quiet", "--with-registry-auth", "--name", target.name]
    args += ["--replicas", str(entry.replicas), "--label", f"{OWNER_LABEL}={entry.environment}"]
    args += ["--stop-grace-period", _seconds(entry.stop_grace_period)]
    for port in entry.ports:
        args += ["--publish", _publish(port)]
    return [*args, *policy_args(entry.update), target.reference]


def update_args(target: Target, current: ServiceState) -> list[str]:
    entry = target.entry
    args = ["service", "update", "--detach", "--quiet", "--with-registry-auth", "--image", target.reference]
    args += ["--replicas", str(entry.replicas), "--stop-grace-period", _seconds(entry.stop_grace_period)]
    wanted = desired_state(target).ports or ()
    for text in current.ports or ():
        if text not in wanted:
            args += ["--publish-rm", text.split(":", 1)[1].split("/", 1)[0]]
    for port in entry.ports:
        if _port_text(port.target, port.published, port.protocol, port.mode) not in (current.ports or ()):
            args += ["--publish-add", _publish(port)]
    return [*args, *policy_args(entry.update), target.name]


def pinned_compose(target: Target) -> dict[str, Any]:
    """The stack's compose document with the service pinned to the digest and our update/rollback config."""
    assert target.compose is not None
    try:
        document = yaml.safe_load(target.compose.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{target.compose}: cannot read the compose file: {error}") from None
    services = (document or {}).get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict) or not isinstance(services.get(target.entry.service), dict):
        raise ConfigError(f"{target.compose}: no service {target.entry.service!r} under services:")
    service = services[target.entry.service]
    policy, entry = target.entry.update, target.entry
    change = {
        "parallelism": policy.parallelism,
        "order": policy.order,
        "monitor": _seconds(policy.monitor),
        "max_failure_ratio": policy.max_failure_ratio,
    }
    deploy = dict(service.get("deploy") or {})
    deploy["replicas"] = entry.replicas
    deploy["update_config"] = {**change, "delay": _seconds(policy.delay), "failure_action": "rollback"}
    deploy["rollback_config"] = {**change, "delay": "0s", "failure_action": "pause"}
    service["image"] = target.reference
    service["stop_grace_period"] = _seconds(entry.stop_grace_period)
    service["deploy"] = deploy
    if entry.ports:
        service["ports"] = [
            {"target": p.target, "protocol": p.protocol, "mode": p.mode}
            | ({"published": p.published} if p.published else {})
            for p in entry.ports
        ]
    return dict(document)


@contextlib.contextmanager
def _compose_file(target: Target) -> Iterator[Path]:
    # Beside the original, so that relative paths in it (env_file, configs) resolve the same; removed after.
    assert target.compose is not None
    with tempfile.NamedTemporaryFile(
        "w", dir=target.compose.parent, prefix=".pipeline-deploy-", suffix=".yml", delete=False
    ) as handle:
        yaml.safe_dump(pinned_compose(target), handle, sort_keys=False)
    try:
        yield Path(handle.name)
    finally:
        Path(handle.name).unlink(missing_ok=True)


def apply(client: DockerClient, target: Target, service: Mapping[str, Any] | None) -> None:
    if target.entry.stack is not None:
        with _compose_file(target) as compose:
            try:
                client.stack.deploy(
                    target.entry.stack, [compose], with_registry_auth=True, resolve_image="never"
                )
            except DockerException as error:
                lines = (error.stderr or "").strip().splitlines()
                raise DeployError(
                    f"docker stack deploy {target.entry.stack}: {lines[-1] if lines else error}"
                ) from None
    elif service is None:
        swarm_call(client, *create_args(target))
    else:
        swarm_call(client, *update_args(target, current_state(service, None)))


# --- the rollout ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    environment: str
    service: str
    digest: str
    previous: str | None
    seconds: float
    replicas: list[Replica]


def await_rollout(
    client: DockerClient,
    target: Target,
    previous: str | None,
    *,
    created: bool = False,
    poll: float = POLL_SECONDS,
    on_poll: Callable[[list[Replica]], None] | None = None,
) -> list[Replica]:
    """Wait until every replica runs the new digest (healthy when gated) and Swarm's update is over.

    Swarm rolls back by itself when a new task fails within the monitor window (the image's HEALTHCHECK
    failing kills the task). When our timeout passes first, we ask Swarm for the rollback and wait for it.
    """
    entry, deadline, rollback_asked = target.entry, time.monotonic() + target.entry.timeout, False
    while True:
        service = inspect_service(client, target.name) or {}
        replicas = service_replicas(client, target.name)
        if on_poll is not None:
            on_poll(replicas)
        update = service.get("UpdateStatus") or {}
        state = update.get("State")
        spec_image = current_state(service, entry.stack).image if service else ""
        if spec_image != target.reference:  # Swarm restored the previous spec: a rollback
            if state in ("rollback_completed", "rollback_paused") or time.monotonic() > deadline:
                timed_out = f"not converged within {entry.timeout:g}s" if rollback_asked else None
                raise _rolled_back(target, previous, replicas, timed_out or update.get("Message"), state)
        elif state not in ("updating", "rollback_started", "paused") and converged(
            replicas, target.digest, entry.replicas, entry.health_gate
        ):
            return replicas
        elif created and (failed := every_slot_failed(replicas, target.digest, entry.replicas)):
            raise DeployError(
                f"deploy {entry.environment}: every new task of {target.name} failed on "
                f"{short_digest(target.digest)} ({failed.state}: {failed.error}); nothing ran before it"
            )
        elif time.monotonic() > deadline:
            if created or rollback_asked:
                raise DeployError(
                    f"deploy {entry.environment}: {target.name} did not converge within {entry.timeout:g}s "
                    f"(update state {state or 'none'}); replicas: {replica_summary(replicas)}"
                )
            log.warning("%s: not converged after %gs; asking Swarm to roll back", target.name, entry.timeout)
            swarm_call(client, "service", "rollback", "--detach", "--quiet", target.name)
            rollback_asked, deadline = True, time.monotonic() + entry.timeout
        time.sleep(poll)


def _rolled_back(
    target: Target,
    previous: str | None,
    replicas: list[Replica],
    message: str | None,
    state: str | None,
) -> DeployError:
    counts = running_digests(replicas)
    where = ", ".join(f"{n} on {short_digest(d)}" for d, n in counts.items()) or "none running"
    outcome = {
        "rollback_completed": "rolled back",
        "rollback_paused": "rollback paused (Swarm could not finish it; see `docker service ps`)",
    }.get(state or "", "rollback unfinished")
    failed = [r for r in replicas if r.digest == target.digest and r.error]
    reason = f"{failed[0].state} task: {failed[0].error}" if failed else (message or "").strip()
    return DeployError(
        f"deploy {target.entry.environment}: {target.name} {outcome} from {short_digest(target.digest)} to "
        f"{short_digest(previous or '?')}: {reason or 'new tasks failed'}; replicas: {where}"
    )


def deploy_one(
    client: DockerClient,
    target: Target,
    *,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
    poll: float = POLL_SECONDS,
    on_poll: Callable[[list[Replica]], None] | None = None,
) -> Rollout | list[str]:
    """Check, then (unless dry) roll out and wait. A dry run returns the spec diff lines instead."""
    service = preflight(client, target, environ)
    current = current_state(service, target.entry.stack) if service else None
    if dry_run:
        return spec_diff(current, desired_state(target))
    previous = digest_of(current.image) if current else None
    log.info(
        "deploy %s: %s %s -> %s",
        target.entry.environment,
        target.name,
        short_digest(previous) if previous else "(new)",
        target.reference,
    )
    started, created = time.monotonic(), service is None
    apply(client, target, service)
    try:
        replicas = await_rollout(client, target, previous, created=created, poll=poll, on_poll=on_poll)
    except KeyboardInterrupt:
        # We only stop watching: the update is Swarm's now, with its own failure action (rollback).
        log.warning(
            "interrupted: Swarm carries on with %s; `pipeline deploy status` shows where it is", target.name
        )
        raise
    except DeployError as error:
        if not created or target.entry.stack is not None:
            raise
        # A service this run created and that never ran: removing it leaves the swarm as it was.
        swarm_call(client, "service", "rm", target.name)
        raise DeployError(f"{error}; the new service was removed") from None
    seconds = time.monotonic() - started
    log.info("deploy %s: %s runs %s on %d replicas (%.1fs)", target.entry.environment, target.name,
             short_digest(target.digest), target.entry.replicas, seconds)  # fmt: skip
    return Rollout(target.entry.environment, target.name, target.digest, previous, seconds, replicas)


# --- CLI ----------------------------------------------------------------------------------------------------


def print_status(client: DockerClient, config: LoadedConfig, environments: Sequence[str]) -> int:
    require_swarm_manager(client)
    console = wide_console()
    table = Table(title="deploy status")
    for column in ("environment", "service", "slot", "task", "node", "state", "digest", "health", "error"):
        table.add_column(column, overflow="fold")
    missing = 0
    for entry in config.pipeline.deploy:
        if environments and entry.environment not in environments:
            continue
        if inspect_service(client, entry.swarm_service) is None:
            table.add_row(entry.environment, entry.swarm_service, "-", "-", "-", "not deployed", "-", "-", "")
            missing += 1
            continue
        for replica in service_replicas(client, entry.swarm_service):
            if replica.desired != "running" and not replica.running:
                continue  # history: shown by `docker service ps`
            table.add_row(entry.environment, entry.swarm_service, str(replica.slot), replica.task, replica.node,
                          replica.state, short_digest(replica.digest or "?"), replica.health, replica.error)  # fmt: skip
    console.print(table)
    return 0 if not missing else 3


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    words: list[str] = list(args.environment)
    if words[:1] == ["status"]:
        return print_status(docker, config, words[1:])
    from pipeline.release import parse_digests  # the same IMAGE=sha256:... syntax as `pipeline release`

    targets = resolve_targets(config, words, parse_digests(config, args.digest or []), args.report)
    for target in targets:  # every environment's checks before the first one changes
        preflight(docker, target)
    if args.dry_run:
        for target in targets:
            lines = deploy_one(docker, target, dry_run=True)
            assert isinstance(lines, list)
            print(f"{target.entry.environment}: {target.name} ({'would change' if lines else 'no change'})")
            for line in lines:
                print(f"  {line}")
        return 0
    with isolated_docker_config():
        # Logged in here, `--with-registry-auth` hands the credentials to the nodes that pull the digest.
        login_all(list({t.registry.name: t.registry for t in targets}.values()))
        for target in targets:
            # In order, stopping at the first failure: a later environment (production) never gets a digest
            # that an earlier one (staging) rolled back.
            deploy_one(docker, target)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="roll the tested digest out to Docker Swarm ([[deploy]]); `deploy status` shows replicas",
    )
    parser.add_argument(
        "environment",
        nargs="*",
        help="environments to deploy (default: all); `status [ENV...]` shows replicas",
    )
    parser.add_argument("--dry-run", action="store_true", help="run the checks, print the service spec diff")
    parser.add_argument(
        "--digest",
        action="append",
        metavar="IMAGE=sha256:...",
        help="deploy this digest (default: release.json)",
    )
    parser.add_argument("--report", type=Path, default=None, help="release report with the tested digest")
    parser.set_defaults(handler=_run)
