"""Publishing the real example image end to end: a real engine, two real registries (one open, one with
htpasswd auth standing in for Docker Hub), the image built once for both platforms.

What must hold: both registries hold the image under the one built digest; both platforms pull by digest
and run from both (`hello from x86_64`, `hello from aarch64`); promotion sets exactly the given tags and
nothing else; the password appears nowhere in what was logged or printed; flaky registries are retried
through; the native fan-out (one process per platform, then `merge`) gives one index in both registries;
a release whose smoke test fails moves no tag and says what it pushed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from pipeline.build import BuildSpec, BuiltImage, build
from pipeline.config import RegistryConfig
from pipeline.distribution import INDEX_TYPES, BlobUploader, RegistryClient
from pipeline.errors import RegistryError
from pipeline.publish import (
    REVISION_KEY,
    VERSION_KEY,
    PromotionJournal,
    PromotionRequest,
    isolated_docker_config,
    promote,
    promote_all,
    push_everywhere,
)
from pipeline.registry import Credentials
from tests.fixtures.faultproxy import FaultPlan, ProxyFactory, list_tags, write_oci_layout
from tests.fixtures.gitrepos import run_git
from tests.fixtures.registries import private_and_hub

if TYPE_CHECKING:  # imported for real, pytest would try to collect the class as tests
    from tests.fixtures.gitrepos import GitRepoFactory
    from tests.fixtures.registries import TestRegistry

REPO_ROOT = Path(__file__).resolve().parents[1]
HELLO = REPO_ROOT / "Dockerfiles" / "hello"
PLATFORMS = ("linux/amd64", "linux/arm64")
ARCH = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
USER_ENV, TOKEN_ENV = "PUBLISH_TEST_HUB_USER", "PUBLISH_TEST_HUB_TOKEN"
TAGS = ["1.4.2", "1.4", "1", "latest", "stable"]

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.01")


@pytest.fixture(scope="session")
def hello_build(
    docker_engine: DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> BuiltImage:
    """The example image, built once for both platforms as an OCI layout; every test pushes this one."""
    spec = BuildSpec(
        image="hello",
        context=HELLO,
        dockerfile=HELLO / "Dockerfile",
        platforms=PLATFORMS,
        build_args={"BASE": base_image},
    )
    return build(spec, output_dir=tmp_path_factory.mktemp("hello-build"), client=docker_engine)


@dataclass
class Target:
    """Where one test publishes: a fresh namespace in each registry, reached directly or through proxies."""

    open_registry: TestRegistry
    auth_registry: TestRegistry
    namespace: str
    open_host: str
    auth_host: str

    @property
    def environ(self) -> dict[str, str]:
        return {USER_ENV: self.auth_registry.username, TOKEN_ENV: self.auth_registry.password}

    @property
    def registries(self) -> tuple[RegistryConfig, ...]:
        return private_and_hub(self.open_host, self.auth_host, self.namespace, (USER_ENV, TOKEN_ENV))

    def repository(self, image: str = "hello") -> str:
        return f"{self.namespace}/{image}"

    def tags(self, image: str = "hello") -> tuple[list[str], list[str]]:
        return (
            list_tags(self.open_registry.url, self.repository(image)),
            list_tags(self.auth_registry.url, self.repository(image), self.auth_registry.credentials),
        )

    def human_tags(self, image: str = "hello") -> tuple[list[str], list[str]]:
        """The tags people pull: the build cache the pipeline keeps under `buildcache[-PLATFORM]` is not one."""
        first, second = self.tags(image)
        return [t for t in first if not t.startswith("buildcache")], [
            t for t in second if not t.startswith("buildcache")
        ]

    def clients(self) -> list[RegistryClient]:
        return [
            RegistryClient(self.open_registry.url),
            RegistryClient(self.auth_registry.url, self.auth_registry.credentials),
        ]

    def references(self, digest: str, image: str = "hello") -> list[str]:
        """The pullable references of `digest`, straight from each registry."""
        return [
            f"{host}/{self.repository(image)}@{digest}"
            for host in (self.open_registry.url, self.auth_registry.url)
        ]


@pytest.fixture
def target(open_registry: TestRegistry, auth_registry: TestRegistry) -> Target:
    namespace = f"pub{secrets.token_hex(4)}"
    return Target(open_registry, auth_registry, namespace, open_registry.url, auth_registry.url)


@pytest.fixture
def logged_in(docker_engine: DockerClient, auth_registry: TestRegistry) -> Iterator[DockerClient]:
    """The engine, logged in to the authenticated registry in a throwaway docker config."""
    with isolated_docker_config():
        docker_engine.login(
            server=auth_registry.url, username=auth_registry.username, password=auth_registry.password
        )
        yield docker_engine


def run_platform(client: DockerClient, reference: str, platform: str) -> str:
    try:
        output = client.run(reference, platform=platform, remove=True, pull="always")
    finally:
        # Pulled only to be run here: leave the engine's image store as it was.
        with contextlib.suppress(DockerException):
            client.image.remove(reference, force=True)
    assert isinstance(output, str)
    return output.strip()


def assert_no_secret(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, "the password leaked into captured output"


def test_one_build_lands_under_the_same_digest_and_runs_everywhere(
    hello_build: BuiltImage,
    target: Target,
    logged_in: DockerClient,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)

    published = push_everywhere(hello_build, target.registries, target.environ)

    assert published.index_digest == hello_build.index_digest
    assert [push.reference for push in published.pushes] == [
        f"{registry.url}/hello@{hello_build.index_digest}" for registry in target.registries
    ]
    assert set(published.platform_digests) == set(PLATFORMS)
    for client in target.clients():
        assert (
            client.manifest_digest(target.repository(), hello_build.index_digest) == hello_build.index_digest
        )
        assert client.get_manifest(target.repository(), hello_build.index_digest).media_type in INDEX_TYPES
        assert (
            client.platform_digests(target.repository(), hello_build.index_digest)
            == published.platform_digests
        )
    assert target.tags() == ([], []), "a push by digest tags nothing"

    for reference in target.references(hello_build.index_digest):
        for platform in PLATFORMS:
            assert run_platform(logged_in, reference, platform) == f"hello from {ARCH[platform]}"

    out, err = capfd.readouterr()
    assert_no_secret(target.auth_registry.password, caplog.text, out, err)


def test_promotion_sets_exactly_the_tags_without_moving_a_blob(
    hello_build: BuiltImage, target: Target, make_fault_proxy: ProxyFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    push_everywhere(hello_build, target.registries, target.environ)
    proxies = make_fault_proxy(target.open_registry.url), make_fault_proxy(target.auth_registry.url)
    target.open_host, target.auth_host = proxies[0].url, proxies[1].url

    promotions = promote("hello", hello_build.index_digest, TAGS, target.registries, target.environ)

    assert [p.tags for p in promotions] == [TAGS, TAGS]
    assert target.tags() == (sorted(TAGS), sorted(TAGS))
    for client in target.clients():
        for tag in TAGS:
            assert client.manifest_digest(target.repository(), tag) == hello_build.index_digest
    for proxy in proxies:
        assert proxy.seen
        assert not proxy.requests(path="/blobs/"), "promotion is manifest-only"
    out, err = capfd.readouterr()
    assert_no_secret(target.auth_registry.password, out, err)


def test_flaky_registries_are_retried_through_to_a_promoted_image(
    hello_build: BuiltImage, target: Target, make_fault_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.retry")
    proxies = [
        make_fault_proxy(registry.url, FaultPlan(rate=0.3, seed=seed, max_in_a_row=2))
        for seed, registry in enumerate((target.open_registry, target.auth_registry))
    ]
    target.open_host, target.auth_host = proxies[0].url, proxies[1].url

    published = push_everywhere(hello_build, target.registries, target.environ)
    promote("hello", published.index_digest, TAGS, target.registries, target.environ)

    assert published.index_digest == hello_build.index_digest
    assert target.tags() == (sorted(TAGS), sorted(TAGS))
    injected = proxies[0].injected + proxies[1].injected
    assert injected.total() >= 5, injected
    retries = [r for r in caplog.records if r.name == "pipeline.retry"]
    assert len(retries) >= injected.total() - 2, "every fault was retried, and every retry logged"


# --- native fan-out: one process per platform, then merge ----------------------------------------------------


def write_config(directory: Path, target: Target, base_image: str, *, smoke: str | None = None) -> Path:
    (directory / "hello").mkdir(parents=True, exist_ok=True)
    for name in ("Dockerfile", "hello.sh"):
        shutil.copy2(HELLO / name, directory / "hello" / name)
    if smoke is not None:
        (directory / "hello" / "smoke.yaml").write_text(smoke)
    else:
        shutil.copy2(HELLO / "smoke.yaml", directory / "hello" / "smoke.yaml")
    registries = "\n".join(
        f'[[registries]]\nname = "{r.name}"\nurl = "{r.url}"\n'
        + (
            f'username_env = "{r.username_env}"\npassword_env = "{r.password_env}"\n'
            if r.username_env
            else ""
        )
        for r in target.registries
    )
    config = directory / "pipeline.toml"
    config.write_text(
        f"""{registries}
[[images]]
name = "hello"
context = "hello"
platforms = ["linux/amd64", "linux/arm64"]
build_args = {{ BASE = "{base_image}" }}
"""
    )
    return config


def pipeline_env(target: Target) -> dict[str, str]:
    return {
        **os.environ,
        **target.environ,
        "PIPELINE_RETRY_FIRST_DELAY": "0.05",
        "PYTHONPATH": str(REPO_ROOT),
        "COLUMNS": "200",
    }


def test_native_fan_out_builds_per_platform_in_separate_processes_then_merges(
    target: Target, base_image: str, tmp_path: Path, logged_in: DockerClient
) -> None:
    config = write_config(tmp_path, target, base_image)
    # `pipeline build` plans from git (labels, SOURCE_DATE_EPOCH), as a release does.
    for args in (
        ("init", "-q", "-b", "main"),
        ("add", "-A"),
        ("commit", "-q", "-m", "hello"),
        ("tag", "v1.0.0"),
    ):
        run_git(tmp_path, *args, timestamp=1767225600)
    env = pipeline_env(target)
    command = [sys.executable, "-m", "pipeline", "--config", str(config)]
    # Two "runners" at once, as a CI matrix would run them.
    runners = {
        platform: subprocess.Popen(
            [
                *command,
                "build",
                "--platform",
                platform,
                "--push-by-digest",
                "--digest-file",
                str(tmp_path / f"{arch}.json"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for platform, arch in ARCH.items()
    }
    outputs = {platform: runner.communicate(timeout=900) for platform, runner in runners.items()}
    for platform, runner in runners.items():
        assert runner.returncode == 0, f"{platform}: {outputs[platform][1][-2000:]}"
    recorded = {
        platform: json.loads((tmp_path / f"{arch}.json").read_text()) for platform, arch in ARCH.items()
    }
    for platform in PLATFORMS:
        assert list(recorded[platform]["platforms"]) == [platform]
    assert target.human_tags() == ([], [])

    merged = subprocess.run(
        [
            *command,
            "merge",
            str(tmp_path / "x86_64.json"),
            str(tmp_path / "aarch64.json"),
            "--output",
            str(tmp_path / "index.json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert merged.returncode == 0, merged.stderr
    index_digest = json.loads((tmp_path / "index.json").read_text())["index_digest"]
    expected = {platform: recorded[platform]["platforms"][platform] for platform in PLATFORMS}
    for client in target.clients():
        assert client.get_manifest(target.repository(), index_digest).media_type in INDEX_TYPES
        assert client.platform_digests(target.repository(), index_digest) == expected
    assert target.human_tags() == ([], []), "build and merge tag nothing"
    for platform in PLATFORMS:
        assert (
            run_platform(logged_in, target.references(index_digest)[1], platform)
            == f"hello from {ARCH[platform]}"
        )
    everything = "".join(out + err for out, err in outputs.values()) + merged.stdout + merged.stderr
    assert_no_secret(target.auth_registry.password, everything)


# --- the release gate ---------------------------------------------------------------------------------------

FAILING_SMOKE = """schemaVersion: 2.0.0
commandTests:
  - name: greets in French, which it does not
    command: /app/hello.sh
    expectedOutput: ["^bonjour de "]
    exitCode: 0
"""


def test_release_with_a_failing_smoke_test_moves_no_tag_and_reports_the_pushes(
    target: Target, base_image: str, git_repo_factory: GitRepoFactory
) -> None:
    repo = git_repo_factory("project")
    config = write_config(repo.path, target, base_image, smoke=FAILING_SMOKE)
    repo.commit(
        "the hello image",
        files={
            p.relative_to(repo.path).as_posix(): p.read_text()
            for p in (
                config,
                repo.path / "hello" / "Dockerfile",
                repo.path / "hello" / "hello.sh",
                repo.path / "hello" / "smoke.yaml",
            )
        },
    )
    repo.tag("v3.1.4")

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--config",
            str(config),
            "release",
            "--report",
            str(repo.path / "out" / "release.json"),
        ],
        cwd=repo.path,
        env=pipeline_env(target),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "smoke" in error_lines[0], result.stderr[-2000:]
    assert target.human_tags() == ([], []), "a smoke failure moves no tag"
    report = json.loads((repo.path / "out" / "release.json").read_text())
    assert report["status"] == "failed"
    (image,) = report["images"]
    assert image["smoke_passed"] is False
    pushed = {entry["name"]: entry["reference"] for entry in image["registries"]}
    assert pushed == {r.name: f"{r.url}/hello@{image['index_digest']}" for r in target.registries}
    assert all(entry["tags_moved"] == [] for entry in image["registries"])
    for client in target.clients():
        assert client.manifest_digest(target.repository(), image["index_digest"]) == image["index_digest"]
    assert_no_secret(target.auth_registry.password, result.stdout, result.stderr, json.dumps(report))


# --- all-or-nothing promotion, floating tags never backwards (issue 17, points 1 and 3) ----------------------
# Small engine-free images (an OCI layout written here) pushed to the real registries, then promoted.


def _push_layout(target: Target, tmp: Path, version: str, revision: str = "0" * 40) -> str:
    """A two-platform image whose index carries the OCI version/revision annotations, pushed everywhere."""
    layout = write_oci_layout(tmp / f"layout-{version}-{secrets.token_hex(2)}")
    blobs = layout.path / "blobs" / "sha256"
    index = json.loads((blobs / layout.index_digest.removeprefix("sha256:")).read_bytes())
    index["annotations"] = {VERSION_KEY: version, REVISION_KEY: revision}
    body = json.dumps(index).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    (blobs / digest.removeprefix("sha256:")).write_bytes(body)
    outer = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": INDEX_TYPES[0], "digest": digest, "size": len(body)}],
    }
    (layout.path / "index.json").write_text(json.dumps(outer))
    for registry in target.registries:
        client = RegistryClient(
            registry.host,
            Credentials(target.auth_registry.username, target.auth_registry.password)
            if registry.username_env
            else None,
        )
        BlobUploader(client, f"{target.namespace}/hello").push_layout(layout.path, digest)
    return digest


def _tag_map(target: Target) -> list[dict[str, str | None]]:
    return [
        {tag: client.manifest_digest(target.repository(), tag) for tag in client.tags(target.repository())}
        for client in target.clients()
    ]


def test_a_tag_write_failing_in_the_second_registry_restores_the_first(
    target: Target, tmp_path: Path, make_fault_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_ATTEMPTS", "2")
    old = _push_layout(target, tmp_path, "1.0.0")
    promote("hello", old, ["1.0.0", "1.0", "1", "latest"], target.registries, target.environ)
    before = _tag_map(target)
    new = _push_layout(target, tmp_path, "1.1.0")
    # The second registry (Docker Hub's stand-in) takes the first tags, then rejects `latest` for good.
    hub = make_fault_proxy(
        target.auth_registry.url,
        FaultPlan(always=True, faults=("500",), method="PUT", path="/manifests/latest$"),
    )
    target.auth_host = hub.url
    journal = PromotionJournal()
    request = PromotionRequest("hello", new, ("1.1.0", "1.1", "1", "latest"), ("1.1", "1", "latest"), "1.1.0")

    with pytest.raises(RegistryError):
        promote_all([request], target.registries, journal, target.environ)

    assert hub.injected_total >= 2, "the write of latest really failed"
    assert _tag_map(target) == before, "every registry is back where it was: old tags restored, new ones gone"
    assert journal.moved == {("hello", "private"): [], ("hello", "dockerhub"): []}
    assert not journal.unrestored, journal.unrestored
    assert any("removed new tag 1.1.0" in line for line in journal.restored), journal.restored
    assert any(f"latest back on {old}" in line for line in journal.restored), journal.restored


def test_floating_tags_never_move_to_a_lower_version_than_the_registry_holds(
    target: Target, tmp_path: Path
) -> None:
    newer = _push_layout(target, tmp_path, "2.0.0")
    promote("hello", newer, ["2.0.0", "2.0", "2", "latest"], target.registries, target.environ)
    # A 1.x backport (or an older CI run finishing last) whose clone never saw 2.0.0: it believes it is latest.
    older = _push_layout(target, tmp_path, "1.9.4")
    journal = PromotionJournal()
    request = PromotionRequest(
        "hello", older, ("1.9.4", "1.9", "1", "latest"), ("1.9", "1", "latest"), "1.9.4"
    )

    promote_all([request], target.registries, journal, target.environ)

    for tags in _tag_map(target):
        assert tags["latest"] == tags["2"] == tags["2.0.0"] == newer
        assert tags["1.9.4"] == tags["1.9"] == tags["1"] == older, "tags that were not higher did move"
    assert journal.moved[("hello", "private")] == ["1.9.4", "1.9", "1"]
    assert len(journal.kept) == 2 and all("stays on 2.0.0" in note for note in journal.kept), journal.kept


def test_two_runs_of_one_commit_agree_on_the_first_tested_digest(target: Target, tmp_path: Path) -> None:
    """Concurrent runs of one commit build two digests (provenance times differ): the first to promote wins
    and the second leaves the tags there, so that both runs report the same release."""
    revision = "1" * 40
    first = _push_layout(target, tmp_path, "1.2.3", revision)
    second = _push_layout(target, tmp_path, "1.2.3", revision)
    tags = ("1.2.3", "1.2", "1", "latest", "sha-1111111")
    promote_all(
        [PromotionRequest("hello", first, tags, ("1.2", "1", "latest"), "1.2.3", revision)],
        target.registries,
        PromotionJournal(),
        target.environ,
    )
    journal = PromotionJournal()

    promote_all(
        [PromotionRequest("hello", second, tags, ("1.2", "1", "latest"), "1.2.3", revision)],
        target.registries,
        journal,
        target.environ,
    )

    for found in _tag_map(target):
        assert set(found.values()) == {first}
    assert journal.moved == {}
    assert len(journal.kept) == 2 * len(tags) and all("same commit" in note for note in journal.kept)
