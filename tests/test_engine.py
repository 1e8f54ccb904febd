"""The engine check, the provisioning guard rails, and the offline base stand-in."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pipeline.distribution import RegistryClient
from pipeline.engine import (
    OFFLINE_BASE_ENV,
    OWN_BUILDER,
    STAND_IN_LABEL,
    BuilderChoice,
    BuilderFacts,
    ProvisionDecision,
    choose_builder,
    docker_hub_repository,
    drop_mirror,
    engine_status,
    ensure_engine,
    is_loopback,
    offline_base_in_use,
    offline_base_wanted,
    provision_decision,
    stand_in_bases,
    stand_in_refusal,
)
from pipeline.registry import RegistryServer, free_port, registry_answers
from tests.fixtures.engine import UserEngine
from tests.fixtures.registries import TestRegistry
from tests.test_release import IMAGE, REPO_ROOT, make_project, run_pipeline


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


# --- the builder choice (pure) -------------------------------------------------------------------------------


def _facts(**overrides: object) -> BuilderFacts:
    values: dict[str, object] = {
        "configured": None,
        "driver": "docker",
        "containerd_store": False,
        "builders": {"default": "docker"},
        "buildkit_image": None,
    }
    values.update(overrides)
    return BuilderFacts(**values)  # type: ignore[arg-type]


def test_containerd_store_or_another_driver_keeps_the_current_builder() -> None:
    assert choose_builder(_facts(containerd_store=True)) == BuilderChoice()
    for driver in ("docker-container", "remote", "kubernetes"):
        assert choose_builder(_facts(driver=driver)) == BuilderChoice()


def test_classic_store_asks_for_the_buildkit_image_then_creates_our_builder() -> None:
    assert choose_builder(_facts()).needs_buildkit_image
    assert choose_builder(_facts(buildkit_image=True)) == BuilderChoice(name=OWN_BUILDER, create=True)
    reused = _facts(builders={"default": "docker", OWN_BUILDER: "docker-container"})
    assert choose_builder(reused) == BuilderChoice(name=OWN_BUILDER)  # no image check, no second builder


def test_classic_store_without_the_buildkit_image_says_what_to_change() -> None:
    choice = choose_builder(_facts(buildkit_image=False))
    assert choice.name is None and not choice.create
    assert choice.refusal is not None and "\n" not in choice.refusal
    for hint in ("containerd-snapshotter", "[build] builder", "moby/buildkit"):
        assert hint in choice.refusal


def test_configured_builder_of_any_driver_is_used_or_named_when_missing() -> None:
    builders = {"default": "docker", "k8s": "kubernetes", "far": "remote"}
    for name in ("k8s", "far", "default"):
        assert choose_builder(_facts(configured=name, builders=builders)) == BuilderChoice(name=name)
    missing = choose_builder(_facts(configured="nope", builders=builders))
    assert missing.refusal is not None
    assert "'nope'" in missing.refusal and "default, far, k8s" in missing.refusal


# --- provisioning decisions (pure) ---------------------------------------------------------------------------


def _decide(**overrides: object) -> ProvisionDecision:
    values: dict[str, object] = {
        "answering": True,
        "installed": True,
        "ours": False,
        "explicit": False,
        "needs": ["the buildx builder cannot build linux/arm64"],
        "can_provision": None,
    }
    values.update(overrides)
    return provision_decision(**values)  # type: ignore[arg-type]


def test_an_engine_the_pipeline_did_not_install_is_never_provisioned() -> None:
    for explicit in (False, True):
        for answering in (False, True):
            decision = _decide(explicit=explicit, answering=answering)
            assert not decision.run
            assert decision.refusal is not None and "not installed by the pipeline" in decision.refusal
            assert "linux/arm64" in decision.refusal  # says what it would have changed


def test_provisioning_where_nothing_is_installed_or_on_our_own_engine() -> None:
    assert _decide(answering=False, installed=False).run  # a fresh host, even implicitly
    assert _decide(answering=False, ours=True).run  # our engine is down: start it
    assert _decide(ours=True, explicit=True).run  # `engine up` may fix our own engine
    implicit = _decide(ours=True)
    assert not implicit.run and implicit.refusal is not None and "engine up" in implicit.refusal
    not_root = _decide(answering=False, installed=False, can_provision="provisioning needs root")
    assert not not_root.run and "needs root" in (not_root.refusal or "")


# --- the offline stand-in (pure) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.8.9.1", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("registry.example.com", False),
        ("10.0.0.5:5000", False),
        ("localhost.example.com", False),
        ("docker.io", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_stand_in_refusal_names_the_registry_and_only_for_remote_ones() -> None:
    local = {"local": "127.0.0.1:5000"}
    assert stand_in_refusal("acme/app", ["alpine:3.20"], local) is None
    assert stand_in_refusal("acme/app", [], {"hub": "docker.io"}) is None
    line = stand_in_refusal("acme/app", ["alpine:3.20"], {**local, "hub": "docker.io"})
    assert line is not None and "\n" not in line
    assert "hub (docker.io)" in line and "NOT Alpine" in line and "engine down --offline-base" in line


def test_offline_base_only_on_explicit_request() -> None:
    assert not offline_base_wanted({})
    assert not offline_base_wanted({OFFLINE_BASE_ENV: "0"})
    assert offline_base_wanted({OFFLINE_BASE_ENV: "1"})
    assert offline_base_wanted({OFFLINE_BASE_ENV: "yes"})


def test_drop_mirror_keeps_every_other_setting(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(
        json.dumps({"registry-mirrors": ["http://127.0.0.1:5099/", "https://m.example"], "debug": True})
    )
    assert drop_mirror(daemon_json, "http://127.0.0.1:5099")
    assert json.loads(daemon_json.read_text()) == {"registry-mirrors": ["https://m.example"], "debug": True}
    assert not drop_mirror(daemon_json, "http://127.0.0.1:5099")
    assert drop_mirror(daemon_json, "https://m.example")
    assert json.loads(daemon_json.read_text()) == {"debug": True}


def test_provision_script_never_swallows_dpkg_failures_nor_touches_a_foreign_engine() -> None:
    script = (REPO_ROOT / "pipeline" / "provision" / "debian-engine.sh").read_text()
    assert "|| true" not in script.split("dpkg -i", 1)[1].split("\n", 2)[0]
    assert 'die "dpkg -i' in script
    # The engine is only restarted or started by the script once it is recorded as ours.
    assert script.index('[ -e "$MARKER" ] || die') < script.index("stop_dockerd\n")


# --- a user's own engine, for real ---------------------------------------------------------------------------


def _tiny_rootfs(directory: Path) -> Path:
    tar = directory / "rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        data = b"a user's file\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return tar


def _snapshot(engine: UserEngine) -> tuple[bytes, list[str], list[str]]:
    images = sorted(f"{image.id} {sorted(image.repo_tags)}" for image in engine.client.image.list(all=True))
    builders = sorted(str(b.name) for b in engine.client.buildx.list() if b.name != OWN_BUILDER)
    return engine.daemon_json.read_bytes(), images, builders


def _same_engine_process(engine: UserEngine) -> bool:
    os.kill(engine.pid, 0)  # raises if it died
    return (engine.root / "docker.pid").read_text().strip() == str(engine.pid)


@pytest.mark.engine
def test_a_users_engine_survives_a_release_untouched(
    user_engine: UserEngine, tmp_path: Path, base_image: str, open_registry: TestRegistry
) -> None:
    user_engine.client.image.import_(_tiny_rootfs(tmp_path), tag="user/app:1")
    project = make_project(
        tmp_path, base_image, f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/user-engine"\n'
    )
    before = _snapshot(user_engine)
    # As the user has it: no opt-in to the stand-in, nothing of the pipeline's configured.
    env = {
        "DOCKER_HOST": user_engine.host,
        OFFLINE_BASE_ENV: "0",
        "PIPELINE_STATE_DIR": str(tmp_path / "state"),
    }
    result = run_pipeline(project, "release", env=env)
    assert "Traceback" not in result.stderr
    assert _same_engine_process(user_engine)
    daemon_json, images, builders = _snapshot(user_engine)
    assert (daemon_json, builders) == (before[0], before[2])
    tags = [t for t in RegistryClient(open_registry.url).tags(f"user-engine/{IMAGE}") if t != "buildcache"]
    if result.returncode == 0:  # a host that could pull the BuildKit image: our own builder did the work
        assert set(before[1]) <= set(images) and "1.2.3" in tags
        return
    assert images == before[1]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "classic image store" in errors[0] and "containerd-snapshotter" in errors[0]
    assert "[build] builder" in errors[0]
    assert tags == [] and "pushing" not in result.stderr  # stopped before any push


@pytest.mark.engine
def test_engine_down_offline_base_removes_the_stand_in_and_nothing_else(
    user_engine: UserEngine, tmp_path: Path
) -> None:
    state = tmp_path / "engine-state"
    port = free_port()
    mirror = RegistryServer(directory=state / "base-mirror", port=port, detach=True).start()
    try:
        tar = _tiny_rootfs(tmp_path)
        user_engine.client.image.import_(tar, tag="alpine:3.20", changes=[f"LABEL {STAND_IN_LABEL}=stand-in"])
        user_engine.client.image.import_(tar, tag="user/keep:1")
        daemon_json = user_engine.daemon_json.read_bytes()
        env = {
            **os.environ,
            "DOCKER_HOST": user_engine.host,
            "PIPELINE_ENGINE_STATE": str(state),
            "PIPELINE_BASE_MIRROR_PORT": str(port),
        }
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "engine", "down", "--offline-base"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "stopped the stand-in mirror" in result.stdout and "alpine:3.20" in result.stdout
        assert not registry_answers(mirror.url) and not state.joinpath("base-mirror").exists()
        assert not user_engine.client.image.exists("alpine:3.20")
        assert user_engine.client.image.exists("user/keep:1")
        assert user_engine.daemon_json.read_bytes() == daemon_json  # not ours: never edited
        assert _same_engine_process(user_engine)
    finally:
        mirror.stop()


@pytest.mark.engine
def test_stand_in_base_to_a_remote_registry_is_refused_before_any_push(tmp_path: Path) -> None:
    if not offline_base_in_use():
        pytest.skip("no offline stand-in on this engine (Docker Hub reachable): nothing to refuse")
    project = make_project(
        tmp_path, "alpine:3.20", '[[registries]]\nname = "hub"\nurl = "registry.example.com/acme"\n'
    )
    for command in (["release"], ["build", "--push-by-digest"]):  # the fan-out push publishes too
        result = run_pipeline(project, *command, env={"PIPELINE_STATE_DIR": str(tmp_path / "state")})
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        assert "stand-in" in errors[0] and "hub (registry.example.com)" in errors[0]
        assert "building" not in result.stderr and "pushing" not in result.stderr


@pytest.mark.engine
def test_configured_builder_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path, "unused:1", '[build]\nbuilder = "no-such-builder"\n')
    result = run_pipeline(project, "release", env={"PIPELINE_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "[build] builder = 'no-such-builder'" in errors[0] and "docker buildx ls" in errors[0]


@pytest.mark.engine
def test_engine_up_on_a_users_engine_changes_nothing_and_says_what_to_change(
    user_engine: UserEngine, tmp_path: Path
) -> None:
    before = _snapshot(user_engine)
    env = {**os.environ, "DOCKER_HOST": user_engine.host, "PIPELINE_STATE_DIR": str(tmp_path / "state")}
    env.pop(OFFLINE_BASE_ENV, None)
    for args, expected in (
        (["up"], "classic image store"),
        (["up", "--offline-base"], "not installed by the pipeline"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "engine", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode != 0 and "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], result.stderr
    assert _snapshot(user_engine) == before
    assert _same_engine_process(user_engine)


def test_the_engine_is_ours_only_on_the_default_socket_and_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import engine

    monkeypatch.setattr(engine, "ENGINE_STATE", tmp_path)
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    base = {"DOCKER_CONFIG": str(config_dir)}
    assert not engine.engine_is_ours(base)  # no record: not ours
    (tmp_path / engine.INSTALL_MARKER).write_text('{"docker_host": "unix:///var/run/docker.sock"}')
    assert engine.engine_is_ours(base)
    assert not engine.engine_is_ours({**base, "DOCKER_HOST": "unix:///home/me/.docker/run/docker.sock"})
    assert not engine.engine_is_ours({**base, "DOCKER_CONTEXT": "desktop-linux"})
    (config_dir / "config.json").write_text('{"currentContext": "colima"}')
    assert not engine.engine_is_ours(base)
    (config_dir / "config.json").write_text('{"currentContext": "default"}')
    assert engine.engine_is_ours(base)
