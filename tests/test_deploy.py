"""Deploy to Docker Swarm: the pure core (spec diff, update flags, compose pinning, report reading, ownership)
and, on the real engine as a single-node swarm, the `web` example released by digest into a real registry:

- 3 replicas created, then a changed site rolled out start-first while an observer polls the Swarm API every
  200 ms: never fewer than 3 healthy replicas, and at the end all 3 on the new digest;
- an image whose HEALTHCHECK fails is rolled back by Swarm: the command fails and every replica runs the
  previous digest;
- bad input (digest not in the registry, no HEALTHCHECK, a service that is not ours) is one line and
  changes nothing.

Traffic: none. Rollouts are judged from task states, the digest in each task's spec and container health.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from pipeline.build import BuildSpec, build
from pipeline.config import RegistryConfig, load_config
from pipeline.deploy import (
    OWNER_LABEL,
    STACK_LABEL,
    Replica,
    Target,
    compose_healthcheck,
    converged,
    create_args,
    current_state,
    deploy_one,
    desired_state,
    every_slot_failed,
    inspect_service,
    pinned_compose,
    released_digest,
    require_ownership,
    resolve_targets,
    service_replicas,
    spec_diff,
    swarm_call,
)
from pipeline.errors import ConfigError, DeployError
from pipeline.publish import push_everywhere
from pipeline.report import ReleaseReport

if TYPE_CHECKING:
    from tests.fixtures.leftovers import RunWatch
    from tests.fixtures.registries import TestRegistry

REPO_ROOT = Path(__file__).resolve().parents[1]
WEB = REPO_ROOT / "Dockerfiles" / "web"
NODE_PLATFORM = "linux/arm64" if platform.machine() in ("aarch64", "arm64") else "linux/amd64"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
USER_ENV, TOKEN_ENV = "DEPLOY_TEST_HUB_USER", "DEPLOY_TEST_HUB_TOKEN"


def write_config(directory: Path, registry_url: str, deploy: str) -> Path:
    path = directory / "pipeline.toml"
    path.write_text(
        f'[[images]]\nname = "examples/web"\ncontext = "{WEB}"\n\n'
        f'[[registries]]\nname = "private"\nurl = "{registry_url}"\n\n{deploy}'
    )
    return path


def target_for(directory: Path, registry_url: str, deploy: str, digest: str) -> Target:
    config = load_config(write_config(directory, registry_url, deploy))
    (target,) = resolve_targets(config, [], {"examples/web": digest}, None)
    return target


SERVICE_ENTRY = """[[deploy]]
environment = "prod"
image = "web"
service = "{service}"
replicas = 3
ports = [{{ target = 8080, mode = "host" }}]
timeout = {timeout}
stop_grace_period = 1
[deploy.update]
order = "start-first"
parallelism = 1
monitor = 1
"""


# --- the pure core ------------------------------------------------------------------------------------------


def test_desired_state_pins_the_digest_and_the_diff_names_each_change(tmp_path: Path) -> None:
    target = target_for(
        tmp_path, "127.0.0.1:5000/acme", SERVICE_ENTRY.format(service="web", timeout=60), DIGEST_B
    )
    desired = desired_state(target)
    assert desired.image == f"127.0.0.1:5000/acme/examples/web@{DIGEST_B}"
    assert target.repository == "acme/examples/web"

    created = spec_diff(None, desired)
    assert created[:2] == [f"+ image: {desired.image}", "+ replicas: 3"]
    assert "+ port: *:8080/tcp host" in created and "+ update.order: start-first" in created

    old = desired.__class__(
        image=f"127.0.0.1:5000/acme/examples/web@{DIGEST_A}",
        replicas=2,
        ports=("8080:8080/tcp ingress",),
        update=tuple((k, "stop-first" if k == "order" else v) for k, v in desired.update),
        owner="prod",
    )
    assert spec_diff(old, desired) == [
        f"~ image: 127.0.0.1:5000/acme/examples/web@{DIGEST_A} -> {desired.image}",
        "~ replicas: 2 -> 3",
        "- port: 8080:8080/tcp ingress",
        "+ port: *:8080/tcp host",
        "~ stop_grace_period: 10s -> 1s",
        "~ update.order: stop-first -> start-first",
    ]
    assert spec_diff(desired, desired) == []


def test_create_flags_roll_back_on_failure_and_never_use_a_tag(tmp_path: Path) -> None:
    target = target_for(tmp_path, "127.0.0.1:5000", SERVICE_ENTRY.format(service="web", timeout=60), DIGEST_A)
    args = create_args(target)
    assert args[-1] == f"127.0.0.1:5000/examples/web@{DIGEST_A}"
    pairs = dict(itertools.pairwise(args))
    assert pairs["--update-failure-action"] == "rollback"
    assert pairs["--update-order"] == "start-first" and pairs["--rollback-order"] == "start-first"
    assert pairs["--update-monitor"] == "1000ms"
    assert pairs["--publish"] == "target=8080,protocol=tcp,mode=host"
    assert pairs["--label"] == f"{OWNER_LABEL}=prod"
    assert "--with-registry-auth" in args


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad_stack = '[[deploy]]\nenvironment = "prod"\nimage = "web"\nservice = "web"\nstack = "shop"\n'
    with pytest.raises(ConfigError, match=r"deploy\[0\].*set both stack and compose"):
        load_config(write_config(tmp_path, "127.0.0.1:5000", bad_stack))
    with pytest.raises(
        ConfigError, match=r"deploy\[0\]\.environment: 'status' is the `pipeline deploy status`"
    ):
        load_config(
            write_config(
                tmp_path,
                "127.0.0.1:5000",
                SERVICE_ENTRY.format(service="w", timeout=1).replace('"prod"', '"status"'),
            )
        )
    unknown_image = '[[deploy]]\nenvironment = "prod"\nimage = "nope"\nservice = "web"\n'
    config = load_config(write_config(tmp_path, "127.0.0.1:5000", unknown_image))
    with pytest.raises(ConfigError, match=r"deploy\[0\]\.image: no \[\[images\]\] named 'nope'"):
        resolve_targets(config, [], {"examples/web": DIGEST_A}, None)
    with pytest.raises(ConfigError, match="no \\[\\[deploy\\]\\] environment 'staging'"):
        resolve_targets(config, ["staging"], {}, None)


def test_only_a_digest_that_passed_the_gate_comes_from_the_report(tmp_path: Path) -> None:
    def write_report(status: str, smoke_passed: bool) -> Path:
        # Written by the release's own report code, so the format is the one `pipeline release` writes.
        report = ReleaseReport(version="1.0.0", revision="abc", mode="publish", started_at="now")
        outcome = report.add_image("examples/web")
        outcome.index_digest, outcome.smoke_passed = DIGEST_A, smoke_passed
        report.finish(status)
        report.write(tmp_path / "release.json")
        return tmp_path / "release.json"

    assert released_digest(write_report("published", True), "examples/web") == DIGEST_A
    with pytest.raises(DeployError, match="did not pass the release gate"):
        released_digest(write_report("failed", False), "examples/web")
    with pytest.raises(DeployError, match="no digest for examples/hello"):
        released_digest(write_report("published", True), "examples/hello")
    with pytest.raises(DeployError, match="no readable release report"):
        released_digest(tmp_path / "missing.json", "examples/web")


def test_compose_service_is_pinned_with_the_update_policy(tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text(
        "services:\n  web:\n    image: examples/web:latest\n    deploy:\n      resources: {limits: {cpus: '0.5'}}\n"
        "  cache:\n    image: redis\n"
    )
    entry = '[[deploy]]\nenvironment = "prod"\nimage = "web"\nservice = "web"\nstack = "shop"\ncompose = "compose.yml"\nreplicas = 2\n'
    target = target_for(tmp_path, "127.0.0.1:5000", entry, DIGEST_A)
    assert target.name == "shop_web"
    document = pinned_compose(target)
    web = document["services"]["web"]
    assert web["image"] == f"127.0.0.1:5000/examples/web@{DIGEST_A}"
    assert web["deploy"]["replicas"] == 2
    assert web["deploy"]["resources"] == {"limits": {"cpus": "0.5"}}, "the user's deploy keys stay"
    assert web["deploy"]["update_config"]["failure_action"] == "rollback"
    assert web["deploy"]["update_config"]["order"] == "start-first"
    assert document["services"]["cache"] == {"image": "redis"}

    assert not compose_healthcheck(target), "the image's HEALTHCHECK is the one to check"
    (tmp_path / "compose.yml").write_text(
        "services:\n  web:\n    image: x\n    healthcheck:\n      test: [CMD, /bin/true]\n      interval: 1s\n"
    )
    assert compose_healthcheck(target), "the compose file's healthcheck replaces the image's"
    (tmp_path / "compose.yml").write_text(
        "services:\n  web:\n    image: x\n    healthcheck:\n      disable: true\n"
    )
    assert not compose_healthcheck(target)

    missing = entry.replace('service = "web"', 'service = "api"')
    with pytest.raises(ConfigError, match="no service 'api' under services"):
        pinned_compose(target_for(tmp_path, "127.0.0.1:5000", missing, DIGEST_A))


def test_ownership_refuses_services_that_are_not_ours(tmp_path: Path) -> None:
    target = target_for(tmp_path, "127.0.0.1:5000", SERVICE_ENTRY.format(service="web", timeout=60), DIGEST_A)

    def service(labels: dict[str, str]) -> dict[str, Any]:
        return {"Spec": {"Labels": labels}}

    require_ownership(target, None)
    require_ownership(target, service({OWNER_LABEL: "prod"}))
    for labels, expected in (
        ({}, "belongs to something else"),
        ({OWNER_LABEL: "staging"}, "belongs to environment 'staging'"),
        ({STACK_LABEL: "shop"}, "belongs to stack 'shop'"),
    ):
        with pytest.raises(DeployError, match=expected):
            require_ownership(target, service(labels))


def test_converged_needs_every_replica_on_the_digest_and_healthy() -> None:
    def replica(slot: int, digest: str, health: str = "healthy", state: str = "running") -> Replica:
        return Replica(slot, f"t{slot}", "n", state, "running", digest, health, "")

    good = [replica(1, DIGEST_B), replica(2, DIGEST_B)]
    assert converged(good, DIGEST_B, 2, health_gate=True)
    assert not converged([*good, replica(3, DIGEST_A)], DIGEST_B, 2, health_gate=True)
    assert not converged(
        [replica(1, DIGEST_B), replica(2, DIGEST_B, "starting")], DIGEST_B, 2, health_gate=True
    )
    assert converged([replica(1, DIGEST_B), replica(2, DIGEST_B, "starting")], DIGEST_B, 2, health_gate=False)
    assert not converged(
        [replica(1, DIGEST_B), replica(2, DIGEST_B, state="failed")], DIGEST_B, 2, health_gate=True
    )


def test_a_new_service_fails_once_every_slot_has_failed_and_none_runs() -> None:
    def replica(slot: int, state: str) -> Replica:
        return Replica(slot, f"t{slot}{state}", "n", state, "running", DIGEST_B, "-", "unhealthy container")

    assert every_slot_failed([replica(1, "failed"), replica(2, "starting")], DIGEST_B, 2) is None
    both = every_slot_failed([replica(1, "failed"), replica(2, "rejected")], DIGEST_B, 2)
    assert both is not None and both.error == "unhealthy container"
    assert (
        every_slot_failed([replica(1, "failed"), replica(2, "failed"), replica(2, "running")], DIGEST_B, 2)
        is None
    )


# --- end to end on a single-node swarm ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def swarm(docker_engine: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerClient]:
    """The shared engine as a swarm manager. Initialised here only if it was not in a swarm; left only then.

    Before initialising it, the no-swarm refusal is checked through the CLI (on a fresh machine, always)."""
    swarm_info = docker_engine.info().swarm
    initialised = swarm_info is None or swarm_info.local_node_state != "active"
    if initialised:
        config = write_config(
            tmp_path_factory.mktemp("no-swarm"), "127.0.0.1:1", SERVICE_ENTRY.format(service="web", timeout=9)
        )
        refused = subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(config), "deploy", "--digest", f"web={DIGEST_A}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "this engine is not in a swarm; run `docker swarm init`" in refused.stderr
        docker_engine.swarm.init(advertise_address="127.0.0.1")
    yield docker_engine
    if initialised:
        with contextlib.suppress(DockerException):
            docker_engine.swarm.leave(force=True)


@dataclass(frozen=True)
class WebImages:
    registry: str  # host:port/namespace
    v1: str
    v2: str
    failing: str
    no_healthcheck: str
    stuck: str
    hub: str  # the authenticated registry (host:port/namespace)
    hub_only: str  # a digest only there, never pulled before
    hub_environ: dict[str, str]


def _build_push(
    context: Path,
    registries: tuple[RegistryConfig, ...],
    base: str,
    output: Path,
    environ: dict[str, str] | None = None,
) -> str:
    spec = BuildSpec(
        image="examples/web",
        context=context,
        dockerfile=context / "Dockerfile",
        platforms=(NODE_PLATFORM,),
        build_args={"BASE": base},
    )
    return push_everywhere(build(spec, output_dir=output), registries, environ).index_digest


@pytest.fixture(scope="session")
def web_images(
    docker_engine: DockerClient,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebImages]:
    """The `web` example pushed by digest (this node's platform only); then a changed site; then images derived
    from it whose HEALTHCHECK fails, or that have none. The first is also in the authenticated registry."""
    scratch = tmp_path_factory.mktemp("deploy-web")
    namespace = f"dep{secrets.token_hex(3)}"
    registry = RegistryConfig(name="private", url=f"{open_registry.url}/{namespace}")
    hub = RegistryConfig(
        name="hub", url=f"{auth_registry.url}/{namespace}", username_env=USER_ENV, password_env=TOKEN_ENV
    )
    hub_environ = {USER_ENV: auth_registry.username, TOKEN_ENV: auth_registry.password}
    context = scratch / "web"
    shutil.copytree(WEB, context)
    v1 = _build_push(context, (registry,), base_image, scratch / "v1")
    index = context / "site" / "index.html"
    index.write_text(index.read_text().replace("Acme parts", "Acme parts, second edition"))
    v2 = _build_push(context, (registry,), base_image, scratch / "v2")
    derived = {}
    for kind, healthcheck in (
        ("failing", 'HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD ["test", "-f", "/no-such-file"]'),
        ("none", "HEALTHCHECK NONE"),
        # Never healthy and never failed: stays `starting` for the whole start period.
        ("stuck", 'HEALTHCHECK --interval=1s --start-period=600s CMD ["test", "-f", "/no-such-file"]'),
    ):
        folder = scratch / kind
        folder.mkdir()
        (folder / "Dockerfile").write_text(
            f"ARG BASE\nFROM {registry.url}/examples/web@{v2}\n{healthcheck}\n"
        )
        derived[kind] = _build_push(folder, (registry,), base_image, scratch / f"{kind}-out")
    # Only in the authenticated registry, and new to this engine (a fresh label): pulling it needs the login.
    folder = scratch / "hub"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        f"ARG BASE\nFROM {registry.url}/examples/web@{v1}\nLABEL dev.pipeline.test.nonce={secrets.token_hex(8)}\n"
    )
    hub_only = _build_push(folder, (hub,), base_image, scratch / "hub-out", hub_environ)
    images = WebImages(
        registry.url,
        v1,
        v2,
        derived["failing"],
        derived["none"],
        derived["stuck"],
        hub.url,
        hub_only,
        hub_environ,
    )
    yield images
    # The swarm pulled these into the engine's store: remove those references (only ours). The containerd
    # store takes about 4 s per image to delete, so the removal runs on after the session instead of in it.
    pulled = [f"{images.registry}/examples/web@{d}" for d in (v1, v2, *derived.values())]
    command = [*docker_engine.client_config.docker_cmd, "image", "rm", "--force", *pulled]
    subprocess.Popen(
        [str(part) for part in [*command, f"{images.hub}/examples/web@{hub_only}"]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


@pytest.fixture
def service_name(swarm: DockerClient) -> Iterator[str]:
    name = f"pipeline-test-deploy-{secrets.token_hex(4)}"
    yield name
    with contextlib.suppress(DockerException):
        if swarm.service.exists(name):
            swarm.service.remove(name)


class Observer:
    """Polls the Swarm API every `interval` seconds in a thread: healthy replicas and digests at each poll."""

    def __init__(self, client: DockerClient, service: str, interval: float = 0.2) -> None:
        self.client, self.service, self.interval = client, service, interval
        self.polls: list[tuple[float, int, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            replicas = service_replicas(self.client, self.service)
            healthy = [r for r in replicas if r.running and r.health == "healthy"]
            digests: dict[str, int] = {}
            for replica in healthy:
                digests[replica.digest or "?"] = digests.get(replica.digest or "?", 0) + 1
            self.polls.append((started, len(healthy), digests))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Observer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def running(client: DockerClient, service: str) -> list[Replica]:
    return [r for r in service_replicas(client, service) if r.running]


@pytest.mark.engine
def test_rolling_update_keeps_three_healthy_and_a_failing_healthcheck_rolls_back(
    swarm: DockerClient, web_images: WebImages, service_name: str, tmp_path: Path
) -> None:
    entry = SERVICE_ENTRY.format(service=service_name, timeout=90)

    def target(digest: str) -> Target:
        return target_for(tmp_path, web_images.registry, entry, digest)

    first = deploy_one(swarm, target(web_images.v1))
    assert not isinstance(first, list) and first.previous is None
    replicas = running(swarm, service_name)
    assert [(r.digest, r.health) for r in replicas] == [(web_images.v1, "healthy")] * 3
    service = inspect_service(swarm, service_name)
    assert service is not None
    assert current_state(service, None) == desired_state(target(web_images.v1)), "inspect reads what we set"

    diff = deploy_one(swarm, target(web_images.v2), dry_run=True)
    assert diff == [
        f"~ image: {web_images.registry}/examples/web@{web_images.v1} -> {target(web_images.v2).reference}"
    ]

    with Observer(swarm, service_name) as observer:
        started = time.monotonic()
        second = deploy_one(swarm, target(web_images.v2))
        wall = time.monotonic() - started
    assert not isinstance(second, list) and second.previous == web_images.v1
    during = [p for p in observer.polls if p[0] >= started]
    minimum = min(healthy for _, healthy, _ in during)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(during)]
    print(
        f"\nrolling update of 3 replicas (start-first): {wall:.1f}s wall, {len(during)} polls "
        f"(median interval {sorted(gaps)[len(gaps) // 2]:.2f}s), minimum healthy replicas seen: {minimum}"
    )
    last = None
    for t, h, d in during:
        key = (h, tuple(sorted((k[7:12], v) for k, v in d.items())))
        if key != last:
            print(f"TIMELINE {t - started:6.2f} healthy={h} {key[1]}")
            last = key
    assert len(during) >= 5
    assert any(web_images.v1 in d and web_images.v2 in d for _, _, d in during), (
        "saw old and new side by side"
    )
    assert minimum >= 3, observer.polls
    assert [(r.digest, r.health) for r in running(swarm, service_name)] == [(web_images.v2, "healthy")] * 3

    started = time.monotonic()
    with pytest.raises(DeployError, match="rolled back") as failure:
        deploy_one(swarm, target(web_images.failing))
    print(f"failing healthcheck: rolled back in {time.monotonic() - started:.1f}s: {failure.value}")
    assert f"replicas: 3 on {web_images.v2[:19]}" in str(failure.value)
    assert "unhealthy" in str(failure.value), "says why the new tasks failed"
    replicas = running(swarm, service_name)
    assert [r.digest for r in replicas] == [web_images.v2] * 3
    service = inspect_service(swarm, service_name)
    assert service is not None and service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(
        web_images.v2
    )

    config = write_config(tmp_path, web_images.registry, entry)
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(config), "deploy", "status"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    rows = [line for line in status.stdout.splitlines() if service_name[:12] in line and "running" in line]
    assert len(rows) == 3 and all(web_images.v2[7:19] in row and "healthy" in row for row in rows), (
        status.stdout
    )


@pytest.mark.engine
def test_bad_input_is_one_line_and_changes_nothing(
    swarm: DockerClient, web_images: WebImages, service_name: str, tmp_path: Path
) -> None:
    entry = SERVICE_ENTRY.format(service=service_name, timeout=30)
    config = write_config(tmp_path, web_images.registry, entry)

    def cli(digest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(config), "deploy", "--digest", f"web={digest}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    for digest, expected in (
        (DIGEST_A, f"examples/web@{DIGEST_A} is not in registry private"),
        (web_images.no_healthcheck, "has no HEALTHCHECK, so a rollout cannot be health-gated"),
    ):
        with pytest.raises(DeployError, match=expected) as refused:
            deploy_one(swarm, target_for(tmp_path, web_images.registry, entry, digest))
        assert "\n" not in str(refused.value)
        assert inspect_service(swarm, service_name) is None, "nothing was created"

    # A new service whose tasks all fail their HEALTHCHECK: refused, and removed, since nothing ran before it.
    with pytest.raises(DeployError, match=r"every new task of .* failed .*unhealthy container.*was removed"):
        deploy_one(swarm, target_for(tmp_path, web_images.registry, entry, web_images.failing))
    assert inspect_service(swarm, service_name) is None

    # A service of the same name made by hand (no owner label) is not ours to update.
    swarm_call(swarm, "service", "create", "--detach", "--quiet", "--name", service_name,
               f"{web_images.registry}/examples/web@{web_images.v1}")  # fmt: skip
    result = cli(web_images.v2)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"service {service_name} exists and belongs to something else" in result.stderr
    service = inspect_service(swarm, service_name)
    assert service is not None and service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].endswith(
        web_images.v1
    )


@pytest.mark.engine
def test_a_stack_is_pinned_and_a_rollout_past_its_timeout_is_rolled_back(
    swarm: DockerClient, web_images: WebImages, tmp_path: Path
) -> None:
    stack = f"pipeline-test-deploy-{secrets.token_hex(4)}"
    (tmp_path / "compose.yml").write_text("services:\n  web:\n    image: examples/web:latest\n")
    entry = (
        f'[[deploy]]\nenvironment = "prod"\nimage = "web"\nservice = "web"\nstack = "{stack}"\n'
        'compose = "compose.yml"\nreplicas = 1\ntimeout = TIMEOUT\nstop_grace_period = 1\n'
        "[deploy.update]\nmonitor = 1\n"
    )
    try:
        first = target_for(tmp_path, web_images.registry, entry.replace("TIMEOUT", "60"), web_images.v1)
        rollout = deploy_one(swarm, first)
        assert not isinstance(rollout, list) and rollout.service == f"{stack}_web"
        assert [(r.digest, r.health) for r in running(swarm, f"{stack}_web")] == [(web_images.v1, "healthy")]
        service = inspect_service(swarm, f"{stack}_web")
        assert service is not None and service["Spec"]["Labels"][STACK_LABEL] == stack
        assert service["Spec"]["UpdateConfig"]["FailureAction"] == "rollback"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["compose.yml", "pipeline.toml"], (
            "no pinned copy left"
        )
        assert deploy_one(swarm, first, dry_run=True) == [], "the stack runs what the dry run would ask for"

        # Its new task stays `starting` (never healthy, never failed): Swarm alone would wait; our timeout asks
        # Swarm for the rollback.
        stuck = target_for(tmp_path, web_images.registry, entry.replace("TIMEOUT", "4"), web_images.stuck)
        with pytest.raises(DeployError, match="rolled back") as failure:
            deploy_one(swarm, stuck)
        assert f"replicas: 1 on {web_images.v1[:19]}" in str(failure.value)
        assert "not converged within 4s" in str(failure.value)
        assert [r.digest for r in running(swarm, f"{stack}_web")] == [web_images.v1]
    finally:
        with contextlib.suppress(DockerException):
            swarm.stack.remove(stack)


@pytest.mark.engine
def test_credentials_reach_the_nodes_and_dry_run_changes_nothing(
    swarm: DockerClient, web_images: WebImages, service_name: str, tmp_path: Path, run_watch: RunWatch
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[[images]]\nname = "examples/web"\ncontext = "{WEB}"\n\n[[registries]]\nname = "hub"\n'
        f'url = "{web_images.hub}"\nusername_env = "{USER_ENV}"\npassword_env = "{TOKEN_ENV}"\n\n'
        + SERVICE_ENTRY.format(service=service_name, timeout=60).replace("replicas = 3", "replicas = 1")
    )
    password = web_images.hub_environ[TOKEN_ENV]

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(config), "deploy", "prod",
             "--digest", f"web={web_images.hub_only}", *extra],
            capture_output=True, text=True, check=False,
            env={**os.environ, **web_images.hub_environ, **run_watch.environ},
        )  # fmt: skip

    run_watch.markers += [web_images.hub, service_name]
    with run_watch.watching() as left:
        dry = cli("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not left.containers and not left.volumes and not left.networks and not left.images, left
    assert not [f for f in left.files if not f.endswith(("image-pipeline", "engine-check.json"))], left
    assert f"prod: {service_name} (would change)" in dry.stdout
    assert f"+ image: {web_images.hub}/examples/web@{web_images.hub_only}" in dry.stdout
    assert inspect_service(swarm, service_name) is None, "a dry run creates nothing"

    # The control: without the credentials the node cannot pull this digest.
    control = f"{service_name}-noauth"
    swarm_call(swarm, "service", "create", "--detach", "--quiet", "--name", control,
               f"{web_images.hub}/examples/web@{web_images.hub_only}")  # fmt: skip
    try:
        deadline, errors = time.monotonic() + 20, ""
        while time.monotonic() < deadline and "No such image" not in errors:
            errors = swarm_call(swarm, "service", "ps", "--no-trunc", "--format", "{{.Error}}", control)
            time.sleep(0.5)
        assert "No such image" in errors, "the node could not pull it without credentials"
    finally:
        swarm.service.remove(control)

    real = cli()
    assert real.returncode == 0, real.stderr
    assert [(r.digest, r.health) for r in running(swarm, service_name)] == [(web_images.hub_only, "healthy")]
    for text in (dry.stdout, dry.stderr, real.stdout, real.stderr):
        assert password not in text
    user_config = Path.home() / ".docker" / "config.json"
    assert not user_config.exists() or web_images.hub.split("/")[0] not in user_config.read_text(), (
        "the login stayed in a throwaway config"
    )
