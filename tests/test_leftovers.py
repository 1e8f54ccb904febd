"""What each command leaves on the user's engine and disk: nothing but what the user asked for.

Every test watches its commands with `run_watch` (a snapshot before, `docker events` during, a snapshot after)
and names what it may leave: the running embedded registry until `registry down`, the image `--no-push`
loads, the registry's data in the state directory. Anything else this run made and left is a leak.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from pipeline.registry import free_port
from tests.fixtures.cosign import generate_key_pair
from tests.fixtures.engine import unavailable
from tests.fixtures.leftovers import (
    Leftovers,
    RunWatch,
    Snapshot,
    leftovers,
    mark_session,
    mark_session_image,
    remove_session_images,
)
from tests.fixtures.registries import TestRegistry
from tests.test_registry import _registry_image_from_debian
from tests.test_release import IMAGE, make_project, run_pipeline

KEY_ENV, PASSWORD_ENV = "TEST_LEAKS_COSIGN_KEY", "TEST_LEAKS_COSIGN_PASSWORD"
# What the state directory keeps on purpose (README, "What a run leaves on your machine"): the embedded
# registry's data, the engine check's cache and a cosign the pipeline provisioned.
STATE_KEPT = ("local-registry/", "engine-check.json/", "cosign/")


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def without_smoke_pulls(images: list[str]) -> list[str]:
    """Leave out what smoke pulled for its checks: untagged, by digest (kept on purpose, see smoke.py)."""
    return [image for image in images if "@sha256:" not in image]


def assert_left_nothing(
    watch: RunWatch, found: Leftovers, keep: tuple[str, ...] = (), what: str = ""
) -> None:
    """Nothing of this run is left, but for files under the state directory's `keep` folders."""

    home = watch.state / "image-pipeline"  # PIPELINE_STATE_DIR/image-pipeline, as state_home() makes it

    def kept(path: Path) -> bool:
        return path in (watch.state, home) or (
            path.is_relative_to(home) and f"{path.relative_to(home)}/".startswith(keep)
        )

    stray = [f for f in found.files if not kept(Path(f))]
    images = without_smoke_pulls(found.images)
    left = (found.containers, found.volumes, found.networks, images, found.builders, stray)
    assert not any(left), f"{what} left {found}"


@pytest.fixture(scope="module")
def registry_image(
    docker_engine: DockerClient, open_registry: TestRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A stand-in for `registry:2` that declares `VOLUME /var/lib/registry` as the real one does, only in a
    registry (not in the engine), so that starting the embedded registry pulls it as it would on a laptop."""
    if shutil.which("docker-registry") is None:
        unavailable("Debian's docker-registry (provisioned with the engine) to build a registry image")
    reference = f"{open_registry.url}/leaks-{secrets.token_hex(3)}/registry:2"
    docker_engine.image.import_(
        _registry_image_from_debian(tmp_path_factory.mktemp("registry-image")),
        tag=reference,
        changes=['ENTRYPOINT ["/bin/registry"]', "VOLUME /var/lib/registry"],
    )
    docker_engine.image.push(reference, quiet=True)
    docker_engine.image.remove(reference)
    yield reference
    if docker_engine.image.exists(reference):
        docker_engine.image.remove(reference, force=True)


@pytest.mark.engine
def test_release_with_the_embedded_registry_leaves_only_the_registry_until_it_is_stopped(
    tmp_path: Path, base_image: str, registry_image: str, run_watch: RunWatch
) -> None:
    port = free_port()
    mark_session(f"127.0.0.1:{port}")
    project = make_project(tmp_path, base_image, f"[local_registry]\nport = {port}\n")
    registry_name = f"pipeline-registry-{port}"
    run_watch.markers += [registry_name, f"127.0.0.1:{port}/", registry_image]
    env = {**run_watch.environ, "PIPELINE_REGISTRY_PROGRAM": "", "PIPELINE_REGISTRY_IMAGE": registry_image}
    try:
        with run_watch.watching() as whole:
            with run_watch.watching() as released:
                _ok(run_pipeline(project, "release", env=env))
            print("release with the embedded registry (running):", released.counts())
            # Asked for: the registry the release published to keeps running (with its data volume), and the
            # image it runs from stays while it does.
            assert [c.split(" ")[0] for c in released.containers] == [registry_name], released
            assert len(released.volumes) == 1, released
            assert without_smoke_pulls(released.images) == [registry_image], released
            assert not released.networks and not released.builders, released
            assert all(Path(f).is_relative_to(run_watch.state) for f in released.files), released
            assert "local registry stopped" in _ok(run_pipeline(project, "registry", "down", env=env)).stdout
    finally:
        run_pipeline(project, "registry", "down", env=env)
    # `registry down` takes all of it away; the published data stays in the state directory.
    print("release with the embedded registry, then registry down:", whole.counts())
    assert_left_nothing(run_watch, whole, keep=STATE_KEPT)


@pytest.mark.engine
def test_registry_up_and_down_leave_nothing(tmp_path: Path, registry_image: str, run_watch: RunWatch) -> None:
    port = free_port()
    mark_session(f"127.0.0.1:{port}")
    project = make_project(tmp_path, "unused", f"[local_registry]\nport = {port}\n")
    run_watch.markers += [f"pipeline-registry-{port}", registry_image]
    env = {**run_watch.environ, "PIPELINE_REGISTRY_PROGRAM": "", "PIPELINE_REGISTRY_IMAGE": registry_image}
    try:
        with run_watch.watching() as found:
            _ok(run_pipeline(project, "registry", "up", "--port", str(port), env=env))
            _ok(run_pipeline(project, "registry", "down", env=env))
    finally:
        run_pipeline(project, "registry", "down", env=env)
    print("registry up, registry down:", found.counts())
    assert_left_nothing(run_watch, found, keep=STATE_KEPT)


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    directory = tmp_path_factory.mktemp("leaks-cosign")
    password = f"kp-{secrets.token_hex(10)}"
    key, public = generate_key_pair(directory, password)
    return key, password, public


def _external_project(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    public_key: Path,
) -> tuple[Path, str]:
    namespace = f"leaks-{secrets.token_hex(4)}"
    project = make_project(
        tmp_path,
        base_image,
        f"""
[[registries]]
name = "hub"
url = "{auth_registry.url}/{namespace}"
username_env = "TEST_HUB_USER"
password_env = "TEST_HUB_TOKEN"

[[registries]]
name = "private"
url = "{open_registry.url}/{namespace}"

[sign]
method = "key"
key_env = "{KEY_ENV}"
password_env = "{PASSWORD_ENV}"
public_key = "{public_key}"
""",
    )
    return project, namespace


@pytest.mark.engine
def test_release_to_external_registries_smoke_verify_and_fan_out_leave_nothing(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    key_pair: tuple[str, str, Path],
    run_watch: RunWatch,
) -> None:
    key, password, public_key = key_pair
    project, namespace = _external_project(tmp_path, base_image, open_registry, auth_registry, public_key)
    run_watch.markers.append(namespace)
    env = {
        **run_watch.environ,
        "TEST_HUB_USER": auth_registry.username,
        "TEST_HUB_TOKEN": auth_registry.password,
        KEY_ENV: key,
        PASSWORD_ENV: password,
    }
    measured = {}
    with run_watch.watching() as measured["release"]:
        _ok(run_pipeline(project, "release", env=env))
    digest = json.loads((project / "release.json").read_text())["images"][0]["index_digest"]
    with run_watch.watching() as measured["smoke"]:
        _ok(run_pipeline(project, "smoke", "--registry", "private", env=env))
    with run_watch.watching() as measured["verify"]:
        _ok(run_pipeline(project, "verify", f"{open_registry.url}/{namespace}/{IMAGE}@{digest}", env=env))
    with run_watch.watching() as measured["build/merge"]:
        files = []
        for platform in ("linux/amd64", "linux/arm64"):
            digest_file = tmp_path / f"{platform.replace('/', '-')}.json"
            _ok(run_pipeline(project, "build", "--platform", platform, "--push-by-digest",
                             "--digest-file", str(digest_file), env=env))  # fmt: skip
            files.append(str(digest_file))
        _ok(run_pipeline(project, "merge", *files, env=env))
    for command, found in measured.items():
        print(f"{command}:", found.counts())
        assert_left_nothing(run_watch, found, keep=STATE_KEPT, what=command)


@pytest.mark.engine
def test_release_no_push_leaves_only_the_image_it_loads(
    tmp_path: Path, base_image: str, run_watch: RunWatch
) -> None:
    project = make_project(
        tmp_path, base_image, '[[registries]]\nname = "nowhere"\nurl = "127.0.0.1:9/unused"\n'
    )
    run_watch.markers += [f"{IMAGE}:", base_image.rsplit(":", 1)[0]]
    with run_watch.watching() as found:
        _ok(run_pipeline(project, "release", "--no-push", env=run_watch.environ))
    print("release --no-push:", found.counts())
    # Asked for: `--no-push` loads the image as IMAGE:VERSION (it may have been there from an earlier run).
    assert all(image.removeprefix("docker.io/").startswith(f"{IMAGE}:") for image in found.images), found
    assert not found.containers and not found.volumes and not found.networks and not found.builders, found
    found.images.clear()
    assert_left_nothing(run_watch, found, keep=STATE_KEPT)


def test_only_this_runs_objects_count_and_volumes_are_traced_through_commits() -> None:
    """The attribution itself (pure): what carries a marker, what its containers mounted or joined, and the
    containers of images committed from them; nothing of anyone else's run, nothing that was there before."""
    before = Snapshot(
        {}, frozenset({"old"}), {}, frozenset({"theirs:1"}), frozenset({"default"}), frozenset()
    )
    after = Snapshot(
        containers={"c1": "pipeline-smoke-1", "c9": "other"},
        volumes=frozenset({"old", "v1", "v2", "v3", "v8", "v9"}),
        networks={"n1": "net-of-c1", "n9": "net-of-c9"},
        images=frozenset({"theirs:1", "other:2", "127.0.0.1:1234/ns/app@sha256:1"}),
        builders=frozenset({"default", "pipeline-multiarch", "someone-elses"}),
        files=frozenset({"/scratch/tmp/left.json"}),
    )

    def event(kind: str, action: str, actor: str, **attributes: str) -> dict[str, object]:
        return {"Type": kind, "Action": action, "Actor": {"ID": actor, "Attributes": attributes}}

    events = [
        event("container", "create", "c1", name="pipeline-smoke-1", image="127.0.0.1:1234/ns/app@sha256:1"),
        event("volume", "mount", "v1", container="c1"),
        event("network", "connect", "n1", container="c1"),
        event("container", "commit", "c1", imageID="sha256:committed"),
        event("container", "create", "c2", name="quirky_name", image="sha256:committed"),
        event("volume", "mount", "v2", container="c2"),
        event("volume", "mount", "old", container="c2"),
        # Made for a container that never starts (CST's setup container, committed then removed): the daemon
        # reports the volume's create just before the container's.
        event("volume", "create", "v3"),
        event("container", "create", "c3", name="gallant_benz", image="127.0.0.1:1234/ns/app@sha256:1"),
        event("volume", "create", "v8"),
        event("container", "create", "c9", name="other", image="busybox"),
        event("volume", "mount", "v9", container="c9"),
        event("network", "connect", "n9", container="c9"),
    ]
    found = leftovers(before, after, events, ["127.0.0.1:1234/"])
    assert found.containers == ["pipeline-smoke-1 (c1)"]
    assert found.volumes == ["v1", "v2", "v3"]
    assert found.networks == ["net-of-c1"]
    assert found.images == ["127.0.0.1:1234/ns/app@sha256:1"]
    assert found.builders == ["pipeline-multiarch"]
    assert found.files == ["/scratch/tmp/left.json"]
    assert found and not leftovers(after, after, events, ["127.0.0.1:1234/"])


@pytest.mark.engine
def test_the_session_removes_what_it_pulled_from_its_gone_registries_and_what_it_loaded(
    tmp_path: Path, docker_engine: DockerClient
) -> None:
    """The end-of-session sweep: images named after a test registry that no longer listens go, those of a
    registry still up (another session's) and those that were there before stay."""
    (tmp_path / "marker").write_text("x")
    archive = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(tmp_path), "marker"], check=True)
    live = socket.create_server(("127.0.0.1", 0))
    gone = free_port()
    try:
        tag = secrets.token_hex(4)
        old, running, pulled = (
            f"127.0.0.1:{gone}/sweep/old:{tag}",
            f"127.0.0.1:{live.getsockname()[1]}/sweep/running:{tag}",
            f"127.0.0.1:{gone}/sweep/pulled:{tag}",
        )
        image_id = docker_engine.import_(archive)
        docker_engine.tag(image_id, old)
        before = Snapshot.take(docker_engine).images
        loaded = f"sweep-{tag}/loaded:1"
        for name in (running, pulled, loaded):
            docker_engine.tag(image_id, name)
        mark_session_image(f"sweep-{tag}/")
        removed = remove_session_images(docker_engine, before)
        assert pulled in removed and loaded in removed, removed
        assert not [name for name in removed if "/sweep/old" in name or "/sweep/running" in name], removed
        left = Snapshot.take(docker_engine).images
        assert old in left and running in left and pulled not in left and loaded not in left
    finally:
        live.close()
        docker_engine.image.remove([old, running, pulled, f"sweep-{tag}/loaded:1"], force=True)
