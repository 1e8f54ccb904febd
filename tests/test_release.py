"""The walking skeleton end to end: a real git repo, a real engine, two real registries (one with auth)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.distribution import RegistryClient
from pipeline.registry import Credentials
from pipeline.signals import descendants
from tests.fixtures.faultproxy import FaultPlan, ProxyFactory
from tests.fixtures.gitrepos import GitRepoFactory
from tests.fixtures.leftovers import mark_session_image
from tests.fixtures.registries import TestRegistry

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE = "acme/hello"


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
        "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z",
    }
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# A smoke file the example image fails: it greets in English.
FAILING_SMOKE = 'schemaVersion: 2.0.0\ncommandTests:\n  - name: wrong greeting\n    command: /app/hello.sh\n    expectedOutput: ["^bonjour"]\n'


def make_project(tmp_path: Path, base_image: str, registries: str, smoke: str | None = None) -> Path:
    # What `--no-push` and `build --load` load: removed at the end of the session.
    mark_session_image(f"{IMAGE}:")
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "Dockerfiles" / "hello", project / "hello")
    if smoke is not None:
        (project / "hello" / "smoke.yaml").write_text(smoke)
    (project / "pipeline.toml").write_text(
        f"""
[labels]
source = "https://example.invalid/acme/hello"
licenses = "MIT"

[[images]]
name = "{IMAGE}"
context = "hello"
build_args = {{ BASE = "{base_image}" }}
{registries}
"""
    )
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "hello")
    git(project, "tag", "v1.2.3")
    return project


def registries_toml(open_registry: TestRegistry, auth_registry: TestRegistry) -> str:
    # Namespaces of their own: the session's registries are shared with other test modules.
    return f"""
[[registries]]
name = "hub"
url = "{auth_registry.url}/release-e2e"
username_env = "TEST_HUB_USER"
password_env = "TEST_HUB_TOKEN"

[[registries]]
name = "private"
url = "{open_registry.url}/release-e2e-private"
"""


def run_pipeline(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(project / "pipeline.toml"), *args],
        cwd=project,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.mark.engine
def test_release_builds_pushes_smokes_and_tags_both_platforms_in_both_registries(
    tmp_path: Path, base_image: str, open_registry: TestRegistry, auth_registry: TestRegistry
) -> None:
    project = make_project(tmp_path, base_image, registries_toml(open_registry, auth_registry))
    secret_env = {"TEST_HUB_USER": auth_registry.username, "TEST_HUB_TOKEN": auth_registry.password}
    result = run_pipeline(project, "release", env=secret_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert auth_registry.password not in output

    report = json.loads((project / "release.json").read_text())
    assert report["status"] == "published" and report["version"] == "1.2.3"
    (image,) = report["images"]
    digest = image["index_digest"]
    assert set(image["platforms"]) == {"linux/amd64", "linux/arm64"}
    smoke_targets = {(t["registry"], t["platform"]) for t in image["smoke"]["targets"] if t["passed"]}
    assert smoke_targets == {(r, p) for r in ("hub", "private") for p in ("linux/amd64", "linux/arm64")}
    for line in ("linux/amd64", "linux/arm64", "hub", "private", "passed"):
        assert line in result.stdout

    hub = RegistryClient(auth_registry.url, Credentials(auth_registry.username, auth_registry.password))
    private = RegistryClient(open_registry.url)
    for client, repository in ((hub, f"release-e2e/{IMAGE}"), (private, f"release-e2e-private/{IMAGE}")):
        assert client.manifest_digest(repository, digest) == digest
        # The build cache lives beside the image under `buildcache` (mode=max) and is not an image tag.
        tags = [tag for tag in client.tags(repository) if tag != "buildcache"]
        assert {"1.2.3", "1.2", "1", "latest"} <= set(tags), tags
        for tag in tags:
            assert client.manifest_digest(repository, tag) == digest
        expected = {ref.rsplit(":", 1)[1] for ref in report["tags_moved"] if f"/{repository}:" in ref}
        assert set(tags) == expected
    planned = {r["name"]: sorted(r["tags_planned"]) for r in image["registries"]}
    moved = {r["name"]: sorted(r["tags_moved"]) for r in image["registries"]}
    assert planned == moved

    # `pipeline smoke` on its own finds what this commit published (its version tag) without being told.
    smoke_json = tmp_path / "smoke.json"
    again = run_pipeline(project, "smoke", "--registry", "private", "--json", str(smoke_json), env=secret_env)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    references = {target["reference"] for target in json.loads(smoke_json.read_text())["targets"]}
    assert references == {f"{open_registry.url}/release-e2e-private/{IMAGE}:1.2.3"}
    # ... and pulls from the registry with a login with the config's credentials, as a release does (the
    # user's docker config has no login for it, and gets none).
    user_config = tmp_path / "user-docker-config"
    user_config.mkdir()
    from_hub = run_pipeline(
        project, "smoke", "--registry", "hub", env={**secret_env, "DOCKER_CONFIG": str(user_config)}
    )
    assert from_hub.returncode == 0, (from_hub.stdout + from_hub.stderr)[-2000:]
    assert "logged in to hub" in from_hub.stderr and list(user_config.iterdir()) == []

    # Independently of the smoke runner: each platform, pulled by tag, reports its own architecture.
    for platform, arch in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        reference = f"{open_registry.url}/release-e2e-private/{IMAGE}:1.2.3"
        out = subprocess.run(
            ["docker", "run", "--rm", "--pull", "always", "--platform", platform, reference],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == f"hello from {arch}"


@pytest.mark.engine
def test_rerun_of_the_same_commit_reuses_its_tested_digest(
    tmp_path: Path, base_image: str, open_registry: TestRegistry
) -> None:
    """Point 8: a rerun tags the digest the first run tested, and says so, instead of tagging a rebuild (whose
    index digest differs while provenance attestations record build times)."""
    project = make_project(
        tmp_path, base_image, f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/rerun"\n'
    )
    reports, outputs = [], []
    for _ in range(2):
        result = run_pipeline(project, "release")
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        reports.append(_report(project)["images"][0])
        outputs.append(result.stdout + result.stderr)
    assert reports[0]["index_digest"] == reports[1]["index_digest"]
    assert reports[0]["platforms"] == reports[1]["platforms"]
    assert set(reports[0]["platforms"]) == {"linux/amd64", "linux/arm64"}
    assert reports[0]["reused_from"] is None and reports[1]["reused_from"] == "private:1.2.3"
    assert "reusing it instead of building" in outputs[1] and "building acme/hello" not in outputs[1]
    client = RegistryClient(open_registry.url)
    assert client.manifest_digest(f"rerun/{IMAGE}", "latest") == reports[0]["index_digest"]


@pytest.mark.engine
def test_failed_smoke_moves_no_tag(tmp_path: Path, base_image: str, open_registry: TestRegistry) -> None:
    project = make_project(
        tmp_path,
        base_image,
        f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/failing"\n',
        smoke=FAILING_SMOKE,
    )
    result = run_pipeline(project, "release")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "no tag was moved" in result.stderr
    report = json.loads((project / "release.json").read_text())
    assert report["status"] == "failed"
    image = report["images"][0]
    assert image["registries"][0]["reference"].endswith(image["index_digest"])
    assert RegistryClient(open_registry.url).tags(f"failing/{IMAGE}") in ([], ["buildcache"])


def test_missing_dockerfile_is_one_line(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "pipeline.toml").write_text('[[images]]\nname = "x"\ncontext = "."\n')
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "x")
    # The dry run says what a release would refuse, not "would build" (issue 17, point 10).
    result = run_pipeline(project, "release", "--dry-run")
    assert result.returncode == 2 and "would build" not in result.stdout, result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "images[x].dockerfile" in line and "does not exist" in line
    result = run_pipeline(project, "release")
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert json.loads((project / "release.json").read_text())["status"] == "refused"
    result = run_pipeline(project, "build", "x", "--load")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Dockerfile" in line and "does not exist" in line


@pytest.mark.engine
def test_unreachable_registry_is_one_line_and_tags_nothing(tmp_path: Path, base_image: str) -> None:
    from pipeline.registry import free_port

    project = make_project(
        tmp_path, base_image, f'[[registries]]\nname = "gone"\nurl = "127.0.0.1:{free_port()}"\n'
    )
    result = run_pipeline(
        project, "release", env={"PIPELINE_RETRY_ATTEMPTS": "2", "PIPELINE_RETRY_FIRST_DELAY": "0.1"}
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gone" in errors[0], result.stderr


@pytest.mark.engine
def test_images_built_on_the_offline_stand_in_are_labelled(
    tmp_path: Path, open_registry: TestRegistry
) -> None:
    from pipeline.engine import STAND_IN_LABEL, offline_base_in_use

    if not offline_base_in_use():
        pytest.skip("Docker Hub is reachable here: the real alpine is used and nothing is labelled")
    project = make_project(
        tmp_path, "alpine:3.20", f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/standin"\n'
    )
    result = run_pipeline(project, "release")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "NOT Alpine" in result.stderr
    report = json.loads((project / "release.json").read_text())
    client = RegistryClient(open_registry.url)
    repository = f"standin/{IMAGE}"
    for digest in report["images"][0]["platforms"].values():
        manifest = client.get_manifest(repository, digest).document
        labels = client.get_blob_json(repository, manifest["config"]["digest"])["config"]["Labels"]
        assert "alpine:3.20" in labels[STAND_IN_LABEL] and "not Alpine" in labels[STAND_IN_LABEL]
        assert labels["org.opencontainers.image.version"] == "1.2.3"


@pytest.mark.engine
def test_no_push_builds_loads_and_smoke_tests_locally(tmp_path: Path, base_image: str) -> None:
    project = make_project(
        tmp_path, base_image, '[[registries]]\nname = "nowhere"\nurl = "127.0.0.1:9/unused"\n'
    )
    result = run_pipeline(project, "release", "--no-push")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((project / "release.json").read_text())
    assert report["status"] == "local"
    targets = report["images"][0]["smoke"]["targets"]
    assert {(t["registry"], t["platform"], t["passed"]) for t in targets} == {
        ("docker", "linux/amd64", True),
        ("docker", "linux/arm64", True),
    }
    assert report["tags_moved"] == []
    assert "aarch64" in result.stdout and "x86_64" in result.stdout


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, "alpine:3.20", '[[registries]]\nname = "hub"\nurl = "127.0.0.1:9/acme"\n'
    )
    result = run_pipeline(project, "release", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would push it by digest to hub (127.0.0.1:9/acme/acme/hello)" in result.stdout
    assert "then would tag in hub: 1.2.3, 1.2, 1, latest" in result.stdout
    assert not (project / "release.json").exists()


def _release_through_proxies(
    tmp_path: Path, base_image: str, proxies: tuple[str, str], auth_registry: TestRegistry, namespace: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    hub_proxy, private_proxy = proxies
    # No registry build cache here: BuildKit would push it through the proxy, which speaks no TLS and so
    # cannot send BuildKit the answer that makes it fall back to plain HTTP.
    registries = f"""
[build]
cache = "none"

[[registries]]
name = "hub"
url = "{hub_proxy}/{namespace}"
username_env = "TEST_HUB_USER"
password_env = "TEST_HUB_TOKEN"

[[registries]]
name = "private"
url = "{private_proxy}/{namespace}"
"""
    project = make_project(tmp_path, base_image, registries)
    env = {
        "TEST_HUB_USER": auth_registry.username,
        "TEST_HUB_TOKEN": auth_registry.password,
        "PIPELINE_RETRY_FIRST_DELAY": "0.05",
    }
    return project, run_pipeline(project, "release", env=env)


@pytest.mark.engine
def test_release_through_flaky_registries_retries_and_publishes(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    make_fault_proxy: ProxyFactory,
) -> None:
    # A quarter of the pipeline's own requests fail (500, 503, reset); the engine's pulls pass.
    plan = FaultPlan(rate=0.25, agent="image-pipeline", max_in_a_row=2, seed=7)
    hub = make_fault_proxy(auth_registry.url, plan)
    private = make_fault_proxy(open_registry.url, plan)
    project, result = _release_through_proxies(
        tmp_path, base_image, (hub.url, private.url), auth_registry, "flaky"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert hub.injected_total + private.injected_total > 0
    assert result.stderr.count("retry ") >= 1
    report = json.loads((project / "release.json").read_text())
    digest = report["images"][0]["index_digest"]
    client = RegistryClient(open_registry.url)
    assert client.manifest_digest(f"flaky/{IMAGE}", "latest") == digest


@pytest.mark.engine
def test_release_against_a_registry_that_breaks_for_good_moves_no_tag(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    make_fault_proxy: ProxyFactory,
) -> None:
    # The private registry answers the checks and the first part of the push, then fails everything.
    hub = make_fault_proxy(auth_registry.url)
    private = make_fault_proxy(open_registry.url, FaultPlan(always=True, after=8, agent="image-pipeline"))
    project, result = _release_through_proxies(
        tmp_path, base_image, (hub.url, private.url), auth_registry, "broken"
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "private" in line and "gave up after" in line
    hub_client = RegistryClient(
        auth_registry.url, Credentials(auth_registry.username, auth_registry.password)
    )
    assert [t for t in hub_client.tags(f"broken/{IMAGE}") if not t.startswith("buildcache")] == []
    assert [
        t for t in RegistryClient(open_registry.url).tags(f"broken/{IMAGE}") if not t.startswith("buildcache")
    ] == []
    report = json.loads((project / "release.json").read_text())
    assert report["status"] == "failed" and report["step"].startswith("push")
    # Issue 17, point 7: a push that failed halfway still says which digest it was pushing.
    assert report["images"][0]["index_digest"].startswith("sha256:")


# --- issue 17: the hostile user's findings, end to end ---------------------------------------------------------


def _private(registry: TestRegistry, namespace: str) -> str:
    return f'[[registries]]\nname = "private"\nurl = "{registry.url}/{namespace}"\n'


def _report(project: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((project / "release.json").read_text())
    return report


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.engine
def test_refusals_write_the_report_and_come_before_any_work(
    tmp_path: Path, open_registry: TestRegistry
) -> None:
    """Points 5, 7, 10 and 12: every refusal is one line, before the engine is touched, with a report."""
    project = make_project(tmp_path, "alpine:3.20", _private(open_registry, "refusals"))
    # A git-ignored file inside the context: buildx would send it, so the tree is not clean.
    (project / ".gitignore").write_text("*.env\n")
    (project / "hello" / ".dockerignore").write_text("smoke.yaml\n")  # sends everything else: `COPY . /app/`
    git(project, "add", ".gitignore", "hello/.dockerignore")
    git(project, "commit", "-q", "-m", "ignore env files")
    git(project, "tag", "-f", "v1.2.3")
    (project / "hello" / "local.env").write_text("TOKEN=oops\n")
    result = run_pipeline(project, "release")
    (line,) = _errors(result)
    assert result.returncode == 1 and "hello/local.env" in line and ".dockerignore" in line, line
    report = _report(project)
    assert (report["status"], report["step"], report["version"]) == ("refused", "start", "1.2.3+dirty")
    (project / "hello" / "local.env").unlink()

    # An unwritable report path is found before any work, not after the tags moved.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_pipeline(project, "release", "--report", str(blocker / "release.json"))
    (line,) = _errors(result)
    assert result.returncode == 2 and "--report" in line and "building" not in result.stderr, result.stderr

    # Several preflight problems: all named, one line each, nothing built.
    toml = (project / "pipeline.toml").read_text()
    (project / "hello" / "smoke.yaml").write_text(
        "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    command: sh\n    expectedOutput: ['(?<=a)b']\n"
    )
    (project / "pipeline.toml").write_text(
        toml.replace('context = "hello"', 'context = "hello"\nplatforms = ["linux/amd64", "linux/s390x"]')
    )
    git(project, "commit", "-qam", "s390x")
    result = run_pipeline(project, "release")
    lines = _errors(result)
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert "lookbehind" in lines[0] and "linux/s390x cannot be built by this engine" in lines[1], lines
    assert _report(project)["status"] == "refused"

    # A token pasted where the variable's name goes: refused, and printed nowhere.
    token = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"
    (project / "pipeline.toml").write_text(toml + f'username_env = "U"\npassword_env = "{token}"\n')
    result = run_pipeline(project, "release", env={"PIPELINE_RETRY_ATTEMPTS": "abc"})
    (line,) = _errors(result)
    assert token not in result.stdout + result.stderr + (project / "release.json").read_text()
    assert "password_env: must name an environment variable" in line
    git(project, "checkout", "-q", "HEAD~1", "--", ".")
    git(project, "commit", "-qam", "back to amd64 and arm64")
    result = run_pipeline(
        project, "release", "--digest", f"{IMAGE}=sha256:{'0' * 64}", env={"PIPELINE_RETRY_ATTEMPTS": "abc"}
    )
    (line,) = _errors(result)
    assert "PIPELINE_RETRY_ATTEMPTS='abc' is not a number" in line, line


@pytest.mark.engine
def test_a_digest_no_registry_holds_is_named_not_none(tmp_path: Path, open_registry: TestRegistry) -> None:
    project = make_project(tmp_path, "alpine:3.20", _private(open_registry, "nodigest"))
    digest = f"sha256:{'a' * 64}"
    result = run_pipeline(project, "release", "--digest", f"{IMAGE}={digest}")
    (line,) = _errors(result)
    assert "does not hold acme/hello@" + digest in line and "None" not in line, line
    report = _report(project)
    assert report["status"] == "failed" and report["failure"] in line


def _wait_for_step(project: Path, prefix: str, process: subprocess.Popen[str], limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(OSError, ValueError):
            if json.loads((project / "release.json").read_text())["step"].startswith(prefix):
                return
        time.sleep(0.2)
    raise AssertionError(f"the release never reached {prefix}")


def _start_release(project: Path, scratch: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    scratch.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--config", str(project / "pipeline.toml"), "release"],
        cwd=project,
        env={**os.environ, "TMPDIR": str(scratch), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.engine
def test_sigterm_during_the_build_stops_buildx_cleans_up_and_exits_143(
    tmp_path: Path, base_image: str, open_registry: TestRegistry
) -> None:
    """Point 2: CI's cancel (SIGTERM) outside the smoke phase."""
    project = make_project(tmp_path, base_image, _private(open_registry, "sigterm"))
    dockerfile = project / "hello" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + f"RUN sleep 60 # {time.time()}\n")
    git(project, "commit", "-qam", "slow build")
    git(project, "tag", "-f", "v1.2.3")
    scratch = tmp_path / "tmp"
    process = _start_release(project, scratch)
    _wait_for_step(project, "build", process)
    time.sleep(3)  # buildx is running and exporting into the scratch folder
    children = descendants(process.pid)
    assert children, "buildx runs as a child"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    report = _report(project)
    assert report["status"] == "interrupted" and "build" in report["failure"], report
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a child outlived the run"
    left = [p.name for p in scratch.iterdir() if p.name.startswith(("pipeline-", "tmp"))]
    assert left == [], f"throwaway docker config or layout left behind: {left}"


@pytest.mark.engine
def test_sigterm_during_smoke_keeps_its_results_and_exits_143(
    tmp_path: Path, base_image: str, open_registry: TestRegistry
) -> None:
    """Point 14: an interrupted smoke run keeps what it found; SIGTERM is 143, not 130."""
    slow = "schemaVersion: 2.0.0\ncommandTests:\n  - name: slow\n    command: sleep\n    args: ['60']\n"
    project = make_project(tmp_path, base_image, _private(open_registry, "sigterm-smoke"), smoke=slow)
    process = _start_release(project, tmp_path / "tmp")
    _wait_for_step(project, "smoke", process)
    time.sleep(4)  # containers are up
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143, stderr[-3000:]
    report = _report(project)
    image = report["images"][0]
    assert report["status"] == "interrupted" and image["smoke_passed"] is False
    assert {t["platform"] for t in image["smoke"]["targets"]} == {"linux/amd64", "linux/arm64"}
    assert image["smoke"]["interrupted"] is True
    assert image["index_digest"] and report["tags_moved"] == []
    client = RegistryClient(open_registry.url)
    assert [t for t in client.tags(f"sigterm-smoke/{IMAGE}") if not t.startswith("buildcache")] == []


@pytest.mark.engine
def test_a_build_failure_reaches_the_report_and_the_job_summary(
    tmp_path: Path, base_image: str, open_registry: TestRegistry
) -> None:
    """Point 9 (the cause itself is #11's buildx tail): whatever the build said reaches release.json and the
    GitHub job summary, not only the terminal."""
    project = make_project(tmp_path, base_image, _private(open_registry, "buildfail"))
    dockerfile = project / "hello" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN exit 42\n")
    git(project, "commit", "-qam", "broken build")
    git(project, "tag", "-f", "v1.2.3")
    summary = tmp_path / "summary.md"
    result = run_pipeline(project, "release", env={"GITHUB_STEP_SUMMARY": str(summary)})
    (line,) = _errors(result)
    report = _report(project)
    assert report["status"] == "failed" and report["step"] == "build acme/hello"
    assert report["failure"] and report["failure"] in line and "build of acme/hello" in report["failure"]
    assert report["failure"] in summary.read_text()


def test_the_actions_derived_config_does_not_make_a_root_context_dirty(
    git_repo_factory: GitRepoFactory,
) -> None:
    # The action writes its derived config next to the project's own; with the repository root as the build
    # context, that untracked file must not turn every action release into a dirty one.
    from pipeline.config import load_config
    from pipeline.github import DERIVED_CONFIG_NAME
    from pipeline.plan import make_plan
    from pipeline.release import _own_files

    project = '[[images]]\nname = "acme/app"\ncontext = "."\n'
    repo = git_repo_factory()
    repo.commit("app", files={"pipeline.toml": project, "Dockerfile": "FROM scratch\nCOPY . /app/\n"})
    repo.tag("v1.0.0")
    repo.write(DERIVED_CONFIG_NAME, project)
    derived = load_config(repo.path / DERIVED_CONFIG_NAME)
    assert not make_plan(derived, environ={}, own_files=_own_files(derived, None)).dirty
    # Any other untracked file still counts, and so does the derived name when it is not the config in use.
    repo.write("stray.txt", "x\n")
    plan = make_plan(derived, environ={}, own_files=_own_files(derived, None))
    assert plan.dirty and plan.context_files == ("stray.txt",)
    (repo.path / "stray.txt").unlink()
    own = load_config(repo.path / "pipeline.toml")
    assert make_plan(own, environ={}, own_files=_own_files(own, None)).context_files == (DERIVED_CONFIG_NAME,)
