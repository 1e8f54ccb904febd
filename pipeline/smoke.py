"""`pipeline smoke`: run container-structure-test checks (and our running-container checks) against published images.

Every target is one image, one platform, from one registry, pulled by digest. Checks run in parallel with a
bound; every container made here carries the label `pipeline.smoke=<run id>` so that a finally block (also on
timeout, SIGTERM or Ctrl-C) can find and remove it.

How a check runs, and why (CST = container-structure-test, whose verdicts these must reproduce):
- command tests: a fresh container per test, the image's ENTRYPOINT replaced by nothing and `command + args`
  as its CMD, exactly like CST's docker driver. `$VAR` in the command and args is expanded here from the image's
  environment (after globalEnvVars and setup), again as CST does. Each setup command runs in its own container
  that is then committed as the image of the next step. Teardown commands are not run: CST's docker driver skips
  them too, since every test gets a fresh container anyway.
- file tests: one `docker export` of one created (never started) container per target, read once, instead of
  CST's one container per file test. Ownership and mode bits are the same archive bytes CST reads.
- metadata: the image config from `docker image inspect`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from xml.etree import ElementTree

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException
from rich.console import Console
from rich.table import Table

from pipeline import signals as signals_policy
from pipeline.config import RegistryConfig
from pipeline.errors import ConfigError, Interrupted, SmokeError
from pipeline.retry import with_retries
from pipeline.structure import (
    CommandTest,
    EnvVar,
    FileContentTest,
    FileExistenceTest,
    MetadataTest,
    ServiceTest,
    Suite,
    expand,
    go_search,
    load_suite,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

LABEL = "pipeline.smoke"
LOCAL_ENGINE = "docker"  # registry name of a target that only exists in the engine (nothing to pull)

# What `uname -m` prints for each platform; 386 and arm/v6 kernels differ in the exact spelling.
UNAME_MACHINES: dict[str, frozenset[str]] = {
    "linux/amd64": frozenset({"x86_64"}),
    "linux/arm64": frozenset({"aarch64", "arm64"}),
    "linux/arm/v7": frozenset({"armv7l", "armv8l"}),
    "linux/arm/v6": frozenset({"armv6l", "armv7l"}),
    "linux/386": frozenset({"i386", "i486", "i586", "i686"}),
    "linux/ppc64le": frozenset({"ppc64le"}),
    "linux/s390x": frozenset({"s390x"}),
    "linux/riscv64": frozenset({"riscv64"}),
}
_OUTPUT_LIMIT = 2000  # characters of stdout/stderr kept per check in reports


@dataclass(frozen=True)
class SmokeTarget:
    image: str  # config image name
    registry: str  # registry name, e.g. "local", "dockerhub"; "docker" for an image only loaded in the engine
    reference: str  # pullable reference, normally repo@sha256:<index digest>
    platform: str  # "linux/amd64" | "linux/arm64" ...
    checks: Path | None  # CST YAML file, None = built-in checks only
    # The platform's own manifest (repo@sha256:...) when the caller knows it already (the release gate
    # does, from the push): saves resolving the index again; the pulled image's platform is still checked.
    platform_reference: str | None = None

    @property
    def label(self) -> str:
        return f"{self.image} {self.platform} from {self.registry}"


@dataclass
class CheckResult:
    name: str
    kind: str  # command | fileExistence | fileContent | metadata | service | platform
    passed: bool
    duration: float
    message: str = ""
    stdout: str = ""
    stderr: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "duration": round(self.duration, 3),
        }
        if self.message:
            data["message"] = self.message
        if self.stdout:
            data["stdout"] = self.stdout
        if self.stderr:
            data["stderr"] = self.stderr
        return data


@dataclass
class TargetResult:
    target: SmokeTarget
    checks: list[CheckResult] = field(default_factory=list)
    error: str = ""  # the image could not be prepared (missing, wrong platform, pull failed)
    duration: float = 0.0
    image_id: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[str]:
        problems = [self.error] if self.error else []
        return problems + [f"{c.kind} {c.name!r}: {c.message}" for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.target.image,
            "registry": self.target.registry,
            "reference": self.target.reference,
            "platform": self.target.platform,
            "checks_file": str(self.target.checks) if self.target.checks else None,
            "image_id": self.image_id,
            "passed": self.passed,
            "error": self.error or None,
            "duration": round(self.duration, 3),
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass
class SmokeReport:
    run_id: str
    targets: list[TargetResult]
    duration: float
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.targets) and not self.interrupted and all(t.passed for t in self.targets)

    @property
    def check_count(self) -> int:
        return sum(len(t.checks) + (1 if t.error else 0) for t in self.targets)

    @property
    def failure_count(self) -> int:
        return sum(len(t.failures) for t in self.targets)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"smoke {verdict}: {self.check_count - self.failure_count}/{self.check_count} checks passed on "
            f"{len(self.targets)} image/platform/registry targets in {self.duration:.1f}s"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "duration": round(self.duration, 3),
            "checks": self.check_count,
            "failures": self.failure_count,
            "targets": [target.to_json() for target in self.targets],
        }

    def to_junit_xml(self) -> str:
        suites = ElementTree.Element(
            "testsuites",
            name="pipeline smoke",
            tests=str(self.check_count),
            failures=str(self.failure_count),
            time=f"{self.duration:.3f}",
        )
        for result in self.targets:
            target = result.target
            suite = ElementTree.SubElement(
                suites,
                "testsuite",
                name=target.label,
                tests=str(len(result.checks) + (1 if result.error else 0)),
                failures=str(len(result.failures)),
                time=f"{result.duration:.3f}",
            )
            properties = ElementTree.SubElement(suite, "properties")
            for key, value in (("reference", target.reference), ("platform", target.platform)):
                ElementTree.SubElement(properties, "property", name=key, value=value)
            classname = f"smoke.{target.image}.{target.registry}.{target.platform.replace('/', '_')}"
            if result.error:
                case = ElementTree.SubElement(suite, "testcase", classname=classname, name="pull", time="0")
                failure = ElementTree.SubElement(case, "failure", message=result.error)
                failure.text = result.error
            for check in result.checks:
                case = ElementTree.SubElement(
                    suite,
                    "testcase",
                    classname=classname,
                    name=f"{check.kind}: {check.name}",
                    time=f"{check.duration:.3f}",
                )
                if not check.passed:
                    failure = ElementTree.SubElement(case, "failure", message=check.message)
                    failure.text = "\n".join(
                        part
                        for part in (
                            check.message,
                            check.stdout and f"stdout:\n{check.stdout}",
                            check.stderr and f"stderr:\n{check.stderr}",
                        )
                        if part
                    )
                elif check.stdout:
                    ElementTree.SubElement(case, "system-out").text = check.stdout
        ElementTree.indent(suites)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            + ElementTree.tostring(suites, encoding="unicode")
            + "\n"
        )

    def table(self) -> Table:
        table = Table(title=f"smoke run {self.run_id}: {self.summary()}")
        for column in ("image", "platform", "registry", "checks", "time", "first failure"):
            table.add_column(column)
        for result in self.targets:
            total = len(result.checks) + (1 if result.error else 0)
            failures = result.failures
            status = (
                f"[green]{total - len(failures)}/{total}[/]"
                if not failures
                else f"[red]{total - len(failures)}/{total}[/]"
            )
            table.add_row(
                result.target.image,
                result.target.platform,
                result.target.registry,
                status,
                f"{result.duration:.1f}s",
                failures[0] if failures else "",
            )
        return table


# --- the run ------------------------------------------------------------------------------------------------


class _Interrupted(Exception):
    """The run is being torn down; work still queued must not start containers."""


class _Run:
    """One smoke run's shared state: the label, the stop flag, and what must be cleaned up."""

    def __init__(self, client: DockerClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.run_id = uuid.uuid4().hex[:12]
        self.stop = threading.Event()
        self._counter = 0
        self._lock = threading.Lock()
        self.images: set[str] = set()  # committed by setup commands

    def name(self) -> str:
        with self._lock:
            self._counter += 1
            return f"pipeline-smoke-{self.run_id}-{self._counter}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.run_id}

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise _Interrupted

    def remove_container(self, name: str) -> None:
        with contextlib.suppress(DockerException):
            self.client.container.remove(name, force=True, volumes=True)

    def cleanup(self) -> None:
        """Remove every container with this run's label, and the images setup commands committed.

        The images pulled for the checks stay (by digest, untagged): on the containerd image store each
        removal runs a synchronous garbage collection of the whole store (11-12 s an image on a store of
        1,400 images), which would stand between the smoke tests and the tags."""
        try:
            leftovers = self.client.container.list(all=True, filters=[("label", f"{LABEL}={self.run_id}")])
        except DockerException as error:
            log.warning(
                "could not list smoke containers to remove (label %s=%s): %s", LABEL, self.run_id, error
            )
            leftovers = []
        if leftovers:
            with contextlib.suppress(DockerException):
                self.client.container.remove(leftovers, force=True, volumes=True)
        for image in list(self.images):
            with contextlib.suppress(DockerException):
                self.client.image.remove(image, force=True)
            self.images.discard(image)


@dataclass
class _Prepared:
    result: TargetResult
    suite: Suite | None
    image_ref: str = ""  # what containers are started from (a digest reference or image id)
    config: dict[str, Any] = field(default_factory=dict)  # the image config (Env, Entrypoint, ...)


def run_smoke(
    targets: Sequence[SmokeTarget],
    *,
    parallel: int | None = None,
    timeout: float = 120.0,
    pull: bool = True,
    on_progress: Callable[[str], None] | None = None,
    client: DockerClient | None = None,
) -> SmokeReport:
    """Run every target's checks and return the report; raises ConfigError for an invalid checks file.

    A check that takes longer than `timeout` seconds is killed and reported failed. Containers are removed
    afterwards in every case; KeyboardInterrupt is re-raised after the cleanup.
    """
    suites: dict[Path, Suite] = {}
    for target in targets:
        if target.platform not in UNAME_MACHINES:
            raise ConfigError(f"smoke target {target.label}: unknown platform {target.platform!r}")
        if target.checks is not None and target.checks not in suites:
            suites[target.checks] = load_suite(target.checks)
    run = _Run(client or docker, timeout)
    progress = on_progress or (lambda line: None)
    workers = max(1, parallel or os.cpu_count() or 1)
    started = time.monotonic()
    results = [TargetResult(target) for target in targets]
    interrupted = False
    previous_term = _raise_on_sigterm()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smoke")
    caught: KeyboardInterrupt | None = None
    try:
        _execute(run, pool, results, suites, pull, progress)
    except KeyboardInterrupt as error:
        interrupted = True
        caught = error
        raise
    finally:
        run.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        run.cleanup()
        if interrupted:
            # Threads still inside a docker call may create a container after the first sweep.
            _join_workers(pool, 10.0)
            run.cleanup()
        else:
            pool.shutdown(wait=True)
            run.cleanup()
        _restore_sigterm(previous_term)
        if caught is not None:
            # What finished before the signal stays on record (the release report keeps it).
            setattr(caught, _PARTIAL, SmokeReport(run.run_id, results, time.monotonic() - started, True))
    return SmokeReport(run.run_id, results, time.monotonic() - started, interrupted)


_PARTIAL = "smoke_report"


def partial_report(error: BaseException) -> SmokeReport | None:
    """The results an interrupted `run_smoke` had when the signal came, if it was interrupted there."""
    report = getattr(error, _PARTIAL, None)
    return report if isinstance(report, SmokeReport) else None


def _execute(
    run: _Run,
    pool: ThreadPoolExecutor,
    results: list[TargetResult],
    suites: dict[Path, Suite],
    pull: bool,
    progress: Callable[[str], None],
) -> None:
    pending: dict[Future[Any], tuple[str, int]] = {}
    remaining = [0] * len(results)
    began = [0.0] * len(results)
    for index, result in enumerate(results):
        began[index] = time.monotonic()
        suite = suites.get(result.target.checks) if result.target.checks else None
        pending[pool.submit(_prepare, run, result, suite, pull)] = ("prepare", index)
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            kind, index = pending.pop(future)
            result = results[index]
            if kind == "prepare":
                units = _units(run, future.result()) if not result.error else []
                remaining[index] = len(units)
                for unit in units:
                    pending[pool.submit(_guarded, unit)] = ("check", index)
            else:
                result.checks.extend(future.result())
                remaining[index] -= 1
            if remaining[index] == 0:
                result.duration = time.monotonic() - began[index]
                progress(_progress_line(result))


def _progress_line(result: TargetResult) -> str:
    total = len(result.checks) + (1 if result.error else 0)
    failures = result.failures
    verdict = "ok" if not failures else "FAILED"
    detail = f": {failures[0]}" if failures else ""
    return (
        f"{verdict} {result.target.label}: {total - len(failures)}/{total} checks passed "
        f"in {result.duration:.1f}s{detail}"
    )


Unit = Callable[[], list[CheckResult]]


def _guarded(unit: Unit) -> list[CheckResult]:
    try:
        return unit()
    except _Interrupted:
        return [
            CheckResult("interrupted", "run", False, 0.0, "the run was interrupted before this check ran")
        ]
    except DockerException as error:
        return [CheckResult("docker", "run", False, 0.0, f"docker failed: {_docker_message(error)}")]


def _docker_message(error: DockerException) -> str:
    lines = (error.stderr or "").strip().splitlines()
    return lines[-1].strip() if lines else f"exit code {error.return_code}"


# --- preparing a target: pull by digest, platform, image config ---------------------------------------------


def _prepare(run: _Run, result: TargetResult, suite: Suite | None, pull: bool) -> _Prepared:
    prepared = _Prepared(result, suite)
    target = result.target
    try:
        run.check_stop()
        if target.registry == LOCAL_ENGINE or not pull:
            prepared.image_ref = target.reference
            inspected = run.client.image.inspect(target.reference)
        else:
            platform_ref = target.platform_reference or _platform_reference(run.client, target)
            run.client.image.pull(platform_ref, platform=target.platform, quiet=True)
            prepared.image_ref = platform_ref
            inspected = run.client.image.inspect(platform_ref)
        result.image_id = inspected.id
        actual = "/".join(p for p in (inspected.os, inspected.architecture, inspected.variant or "") if p)
        if not _same_platform(actual, target.platform) and target.registry != LOCAL_ENGINE:
            result.error = (
                f"{target.reference} is {actual}, not {target.platform} (pulled from {target.registry})"
            )
        raw = inspected.config.model_dump(by_alias=True, mode="json") if inspected.config is not None else {}
        prepared.config = raw
    except _Interrupted:
        result.error = "interrupted before the image was pulled"
    except SmokeError as error:
        result.error = str(error)
    except DockerException as error:
        message = _docker_message(error)
        if "no such image" in message.lower():
            result.error = (
                f"{target.reference} is not in the engine (registry {target.registry}); load or pull it"
            )
        elif "not found" in message.lower() or "manifest unknown" in message.lower():
            result.error = f"{target.reference} not found in registry {target.registry}: {message}"
        else:
            result.error = (
                f"could not pull {target.reference} for {target.platform} from {target.registry}: {message}"
            )
    return prepared


_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "connection reset", "no route to host")


def _unreachable(message: str) -> bool:
    """The registry itself is down or unreachable (not: it answered that the image is missing)."""
    return any(marker in message.lower() for marker in _UNREACHABLE)


def _same_platform(actual: str, wanted: str) -> bool:
    # arm64 images often carry variant v8 that platform strings leave out.
    return actual == wanted or actual.removesuffix("/v8") == wanted.removesuffix("/v8")


def _repository(reference: str) -> str:
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    return name


def _platform_reference(client: DockerClient, target: SmokeTarget) -> str:
    """`repo@sha256:<platform manifest>` for the target's platform, so that nothing else can be run by mistake.

    Pulling the index by digest with --platform would do on the containerd store, but the classic store keeps
    one image per name, so two platforms pulled in parallel would race; a per-platform digest cannot.
    """
    try:
        manifest = client.buildx.imagetools.inspect(target.reference)
    except DockerException as error:
        message = _docker_message(error)
        if _unreachable(message):
            raise SmokeError(
                f"registry {target.registry} cannot be reached for {target.reference} ({message}); "
                "is it running?"
            ) from None
        raise SmokeError(
            f"{target.reference} not found in registry {target.registry} ({message}); was it pushed?"
        ) from None
    if not manifest.manifests:
        return target.reference  # a single-platform image: the platform is checked after the pull
    published = []
    for entry in manifest.manifests:
        platform = entry.platform
        if platform is None or platform.os in (None, "unknown"):
            continue  # attestation manifests
        name = "/".join(p for p in (platform.os, platform.architecture, platform.variant or "") if p)
        published.append(name)
        if _same_platform(name, target.platform) and entry.digest:
            return f"{_repository(target.reference)}@{entry.digest}"
    raise SmokeError(
        f"{target.image} in registry {target.registry} has no {target.platform} image "
        f"({target.reference} has: {', '.join(published) or 'none'}); build and push that platform"
    )


# --- the checks of one prepared target ----------------------------------------------------------------------


def _units(run: _Run, prepared: _Prepared) -> list[Unit]:
    suite = prepared.suite
    units: list[Unit] = []
    if suite is None or suite.platform_check:
        units.append(lambda: [_platform_check(run, prepared)])
    if suite is None:
        return units
    for command_test in suite.command_tests:
        units.append(lambda test=command_test: [_command_check(run, prepared, suite, test)])  # type: ignore[misc]
    if suite.file_existence_tests or suite.file_content_tests:
        units.append(lambda: _file_checks(run, prepared, suite))
    if suite.metadata_test is not None:
        metadata = suite.metadata_test
        units.append(lambda: [_metadata_check(prepared, metadata)])
    for service_test in suite.service_tests:
        units.append(lambda test=service_test: [_service_check(run, prepared, test)])  # type: ignore[misc]
    return units


@dataclass
class _Outcome:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    error: str = ""  # the container could not be created or started


class _LostSnapshot(Exception):
    """The engine lost the snapshot of a shared base layer while it unpacked the image for this container:
    the garbage collection of an image removed meanwhile took it (containerd/containerd#3787; hosted runners
    hit it too). Nothing was created, and unpacking again recreates the layer, so the run is asked again."""

    def __init__(self, outcome: _Outcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome

    @staticmethod
    def seen_in(outcome: _Outcome) -> bool:
        return _lost_snapshot(outcome.error)


def _lost_snapshot(text: str) -> bool:
    return "parent snapshot" in text and "does not exist" in text


def _making_container(make: Callable[[], T], what: str) -> T:
    """Create (or start detached) a container, asked again like `_run_container` when the engine lost a
    layer while unpacking its image (see _LostSnapshot)."""
    return with_retries(
        make,
        what,
        is_transient=lambda error: isinstance(error, DockerException) and _lost_snapshot(str(error)),
    )


def _run_container(
    run: _Run,
    prepared: _Prepared,
    command: Sequence[str],
    env: dict[str, str],
    *,
    image: str | None = None,
    bound: float | None = None,
    name: str | None = None,
) -> _Outcome:
    """Run one container to completion with the entrypoint replaced, killing it at the time bound; asked
    again (bounded, logged) when the engine lost a layer while unpacking the image."""

    def once() -> _Outcome:
        outcome = _run_container_once(run, prepared, command, env, image=image, bound=bound, name=name)
        if _LostSnapshot.seen_in(outcome):
            raise _LostSnapshot(outcome)
        return outcome

    what = f"running {image or prepared.image_ref} ({prepared.result.target.platform})"
    try:
        return with_retries(once, what, is_transient=lambda error: isinstance(error, _LostSnapshot))
    except _LostSnapshot as error:
        return error.outcome


def _run_container_once(
    run: _Run,
    prepared: _Prepared,
    command: Sequence[str],
    env: dict[str, str],
    *,
    image: str | None,
    bound: float | None,
    name: str | None,
) -> _Outcome:
    run.check_stop()
    name = name or run.name()
    options = prepared.suite.container_run_options if prepared.suite else None
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    failure: list[DockerException] = []

    def consume() -> None:
        try:
            for source, chunk in run.client.container.run(
                image or prepared.image_ref,
                list(command),
                entrypoint="",
                envs=env,
                name=name,
                labels=run.labels,
                platform=prepared.result.target.platform,
                stream=True,
                user=(options.user or None) if options else None,
                privileged=options.privileged if options else False,
                tty=False,
                cap_add=options.capabilities if options else (),
                volumes=[_bind(mount) for mount in options.bind_mounts] if options else (),
                env_files=[options.env_file] if options and options.env_file else (),
                pull="never",
                remove=True,
            ):
                (stdout if source == "stdout" else stderr).append(chunk)
        except DockerException as error:
            failure.append(error)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(bound if bound is not None else run.timeout)
    timed_out = worker.is_alive()
    if timed_out:
        with contextlib.suppress(DockerException):
            run.client.container.kill(name)
        worker.join(10.0)
    if timed_out or failure:
        run.remove_container(name)
    out = b"".join(stdout).decode(errors="replace")
    err = b"".join(stderr).decode(errors="replace")
    if timed_out:
        return _Outcome(out, err, -1, timed_out=True)
    if failure:
        error = failure[0]
        if error.return_code in (125, 126, 127) and "docker:" in err + (error.stderr or ""):
            # The daemon refused to create or start it (CST reports these as errors, not as exit codes).
            return _Outcome(out, err, error.return_code, error=_docker_error_line(err))
        return _Outcome(out, err.removesuffix(_docker_error_line(err)), error.return_code)
    return _Outcome(out, err, 0)


def _docker_error_line(stderr: str) -> str:
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("docker:"):
            return line.strip()
    return ""


def _bind(mount: str) -> tuple[str, str] | tuple[str, str, str]:
    parts = mount.split(":")
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise SmokeError(f"containerRunOptions.bindMounts: {mount!r} is not HOST:CONTAINER[:OPTIONS]")


def _env_map(config: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def _clip(text: str) -> str:
    return text if len(text) <= _OUTPUT_LIMIT else text[:_OUTPUT_LIMIT] + f"... ({len(text)} characters)"


def _platform_check(run: _Run, prepared: _Prepared) -> CheckResult:
    started = time.monotonic()
    platform = prepared.result.target.platform
    outcome = _run_container(run, prepared, ["uname", "-m"], {})
    duration = time.monotonic() - started
    name = f"uname -m is {platform}"
    if outcome.timed_out:
        return CheckResult(name, "platform", False, duration, f"timed out after {run.timeout:.0f}s")
    if outcome.error or outcome.exit_code != 0:
        return CheckResult(
            name,
            "platform",
            False,
            duration,
            f"could not run `uname -m` ({outcome.error or f'exit code {outcome.exit_code}'}); "
            "set `platformCheck: false` in the checks file for images without uname",
            _clip(outcome.stdout),
            _clip(outcome.stderr),
        )
    machine = outcome.stdout.strip()
    if machine not in UNAME_MACHINES[platform]:
        return CheckResult(
            name,
            "platform",
            False,
            duration,
            f"the container runs as {machine!r}, expected {' or '.join(sorted(UNAME_MACHINES[platform]))}",
        )
    return CheckResult(name, "platform", True, duration, stdout=machine)


def _command_check(run: _Run, prepared: _Prepared, suite: Suite, test: CommandTest) -> CheckResult:
    started = time.monotonic()
    deadline = started + run.timeout
    image_env = _env_map(prepared.config)
    # globalEnvVars become part of the image (CST commits them), each expanded against the image's env.
    extra: dict[str, str] = {
        var.key: expand(var.value, lambda k: image_env.get(k, "")) for var in suite.global_env_vars
    }
    current_env = {**image_env, **extra}
    image: str | None = None
    if test.setup:
        # CST expands the global and the test's vars once, against the image's env, for all setup steps.
        setup_env = {
            var.key: expand(var.value, lambda k: current_env.get(k, ""))
            for var in (*suite.global_env_vars, *test.env_vars)
        }
        for step in test.setup:
            left = deadline - time.monotonic()
            if left <= 0:
                return CheckResult(
                    test.name,
                    "command",
                    False,
                    time.monotonic() - started,
                    f"timed out after {run.timeout:.0f}s in setup",
                )
            committed = _run_setup(run, prepared, step, {**extra, **setup_env}, image, left)
            if committed is None:
                return CheckResult(
                    test.name,
                    "command",
                    False,
                    time.monotonic() - started,
                    f"setup {list(step)} timed out after {run.timeout:.0f}s",
                )
            image = committed
        extra.update(setup_env)
        current_env.update(setup_env)
    command = [expand(part, lambda k: current_env.get(k, "")) for part in (test.command, *test.args)]
    # The test's own vars reach the command unexpanded, as in CST.
    env = {**extra, **{var.key: var.value for var in test.env_vars}}
    left = max(deadline - time.monotonic(), 0.1)
    outcome = _run_container(run, prepared, command, env, image=image, bound=left)
    duration = time.monotonic() - started
    if outcome.timed_out:
        return CheckResult(
            test.name,
            "command",
            False,
            duration,
            f"timed out after {run.timeout:.0f}s; killed",
            _clip(outcome.stdout),
            _clip(outcome.stderr),
        )
    if outcome.error:
        return CheckResult(
            test.name, "command", False, duration, outcome.error, _clip(outcome.stdout), _clip(outcome.stderr)
        )
    problems = []
    for pattern in test.expected_error:
        if not go_search(pattern, outcome.stderr):
            problems.append(f"expected {pattern!r} not found in stderr")
    for pattern in test.excluded_error:
        if go_search(pattern, outcome.stderr):
            problems.append(f"excluded {pattern!r} found in stderr")
    for pattern in test.expected_output:
        if not go_search(pattern, outcome.stdout):
            problems.append(f"expected {pattern!r} not found in stdout")
    for pattern in test.excluded_output:
        if go_search(pattern, outcome.stdout):
            problems.append(f"excluded {pattern!r} found in stdout")
    if outcome.exit_code != test.exit_code:
        problems.append(f"exit code {outcome.exit_code}, expected {test.exit_code}")
    return CheckResult(
        test.name,
        "command",
        not problems,
        duration,
        "; ".join(problems),
        _clip(outcome.stdout),
        _clip(outcome.stderr),
    )


def _run_setup(
    run: _Run, prepared: _Prepared, step: Sequence[str], env: dict[str, str], image: str | None, bound: float
) -> str | None:
    """Run one setup command and commit its container as the next image; None when it timed out."""
    run.check_stop()
    name = run.name()
    container = _making_container(
        lambda: run.client.container.create(
            image or prepared.image_ref,
            list(step),
            entrypoint="",
            envs=env,
            name=name,
            labels=run.labels,
            platform=prepared.result.target.platform,
            pull="never",
        ),
        f"creating a setup container from {image or prepared.image_ref}",
    )
    try:
        run.client.container.start(container)
        waiter = threading.Thread(target=lambda: run.client.container.wait(container), daemon=True)
        waiter.start()
        waiter.join(bound)
        if waiter.is_alive():
            return None
        # As in CST, a failing setup command does not fail the test by itself: its effect is what is tested.
        committed = run.client.container.commit(container)
        run.images.add(committed.id)
        return committed.id
    finally:
        run.remove_container(name)


# --- file checks: one export per target ---------------------------------------------------------------------


class _RootFS:
    """The flattened filesystem of a container, as `docker export` gives it, looked up like docker cp does."""

    def __init__(self, archive: tarfile.TarFile) -> None:
        self.archive = archive
        self.entries: dict[str, tarfile.TarInfo] = {}
        for member in archive:
            path = "/" + member.name.strip("/").removeprefix("./")
            self.entries[path.rstrip("/") or "/"] = member
        if "/" not in self.entries:
            # The export carries no entry for the root itself; the archive API reports it as this.
            root = tarfile.TarInfo("/")
            root.type = tarfile.DIRTYPE
            root.mode = 0o755
            self.entries["/"] = root

    def lookup(self, path: str, *, follow_last: bool, hops: int = 0) -> tarfile.TarInfo | None:
        """Resolve symlinks in the parent directories (and the last part only if asked), inside the root."""
        if hops > 40:
            return None
        parts = [p for p in PurePosixPath("/" + path).parts[1:] if p not in ("", ".")]
        current = "/"
        for index, part in enumerate(parts):
            if part == "..":
                current = str(PurePosixPath(current).parent)
                continue
            candidate = (current.rstrip("/") + "/" + part) if current != "/" else "/" + part
            member = self.entries.get(candidate)
            if member is None:
                return None
            last = index == len(parts) - 1
            if member.issym() and (not last or follow_last):
                target = member.linkname
                base = target if target.startswith("/") else str(PurePosixPath(current) / target)
                rest = "/".join(parts[index + 1 :])
                resolved = self.lookup(
                    base + ("/" + rest if rest else ""), follow_last=follow_last, hops=hops + 1
                )
                return resolved
            current = candidate
        return self.entries.get(current)

    def read(self, member: tarfile.TarInfo) -> bytes | None:
        if member.islnk():
            linked = self.entries.get("/" + member.linkname.strip("/"))
            return self.read(linked) if linked is not None and not linked.islnk() else None
        handle = self.archive.extractfile(member) if member.isfile() else None
        return handle.read() if handle is not None else None


def _file_checks(run: _Run, prepared: _Prepared, suite: Suite) -> list[CheckResult]:
    started = time.monotonic()
    tests: list[FileExistenceTest | FileContentTest] = [
        *suite.file_existence_tests,
        *suite.file_content_tests,
    ]
    run.check_stop()
    name = run.name()
    try:
        with tempfile.TemporaryDirectory(prefix="pipeline-smoke-") as scratch:
            archive_path = Path(scratch) / "rootfs.tar"
            container = _making_container(
                lambda: run.client.container.create(
                    prepared.image_ref,
                    ["true"],
                    entrypoint="",
                    name=name,
                    labels=run.labels,
                    platform=prepared.result.target.platform,
                    pull="never",
                ),
                f"creating a container to export {prepared.image_ref}",
            )
            exporter = threading.Thread(
                target=lambda: run.client.container.export(container, archive_path), daemon=True
            )
            exporter.start()
            exporter.join(run.timeout)
            if exporter.is_alive() or not archive_path.exists():
                message = (
                    f"exporting the filesystem timed out after {run.timeout:.0f}s"
                    if exporter.is_alive()
                    else "exporting the filesystem failed"
                )
                return [_file_result(t, False, time.monotonic() - started, message) for t in tests]
            run.remove_container(name)
            with tarfile.open(archive_path) as archive:
                rootfs = _RootFS(archive)
                image_env = _env_map(prepared.config)
                results = []
                for test in tests:
                    check_started = time.monotonic()
                    if isinstance(test, FileExistenceTest):
                        passed, message = _existence(rootfs, test, image_env)
                    else:
                        passed, message = _content(rootfs, test)
                    # The export is shared: each check's time is its own evaluation plus its share of the export.
                    results.append(_file_result(test, passed, time.monotonic() - check_started, message))
                share = (time.monotonic() - started) / max(len(results), 1)
                for result in results:
                    result.duration += share
                return results
    finally:
        run.remove_container(name)


def _file_result(
    test: FileExistenceTest | FileContentTest, passed: bool, duration: float, message: str
) -> CheckResult:
    kind = "fileExistence" if isinstance(test, FileExistenceTest) else "fileContent"
    return CheckResult(test.name, kind, passed, duration, message)


def go_file_mode(member: tarfile.TarInfo) -> str:
    """Go's os.FileMode.String() for a tar entry, which is what CST compares `permissions` with."""
    letters = ""
    if member.isdir():
        letters += "d"
    if member.issym():
        letters += "L"
    if member.isblk() or member.ischr():
        letters += "D"
    if member.isfifo():
        letters += "p"
    if member.mode & 0o4000:
        letters += "u"
    if member.mode & 0o2000:
        letters += "g"
    if member.ischr():
        letters += "c"
    if member.mode & 0o1000:
        letters += "t"
    bits = "".join(
        char if member.mode & (1 << (8 - index)) else "-" for index, char in enumerate("rwxrwxrwx")
    )
    return (letters or "-") + bits


def _existence(rootfs: _RootFS, test: FileExistenceTest, image_env: dict[str, str]) -> tuple[bool, str]:
    path = expand(test.path, lambda k: image_env.get(k, ""))
    member = rootfs.lookup(path, follow_last=False)
    if member is None:
        return (not test.should_exist, "" if not test.should_exist else f"{path} does not exist")
    if not test.should_exist:
        return False, f"{path} exists but should not"
    problems = []
    mode = go_file_mode(member)
    if test.permissions and mode != test.permissions:
        problems.append(f"permissions are {mode}, expected {test.permissions}")
    if test.is_executable_by:
        mask = {"owner": 0o100, "group": 0o010, "other": 0o001, "any": 0o111}[test.is_executable_by]
        if not member.mode & mask:
            problems.append(f"not executable by {test.is_executable_by} ({mode})")
    if test.uid is not None and member.uid != test.uid:
        problems.append(f"owned by uid {member.uid}, expected {test.uid}")
    if test.gid is not None and member.gid != test.gid:
        problems.append(f"group is gid {member.gid}, expected {test.gid}")
    return (not problems, "; ".join(problems))


def _content(rootfs: _RootFS, test: FileContentTest) -> tuple[bool, str]:
    member = rootfs.lookup(test.path, follow_last=True)
    if member is None:
        return False, f"{test.path} does not exist"
    if member.isdir():
        return False, f"{test.path} is a directory, not a file"
    data = rootfs.read(member)
    if data is None:
        return False, f"{test.path} is not a regular file"
    text = data.decode(errors="replace")
    problems = [f"expected {p!r} not found" for p in test.expected_contents if not go_search(p, text)]
    problems += [f"excluded {p!r} found" for p in test.excluded_contents if go_search(p, text)]
    return (not problems, "; ".join(problems))


# --- metadata -----------------------------------------------------------------------------------------------


def _metadata_check(prepared: _Prepared, test: MetadataTest) -> CheckResult:
    started = time.monotonic()
    config = prepared.config
    env = _env_map(config)
    labels: dict[str, str] = dict(config.get("Labels") or {})
    problems: list[str] = []
    for var in test.env_vars:
        problems += _pair_problem("env var", var, env)
    for key in test.unbound_env_vars:
        if key in env:
            problems.append(f"env var {key} should not be set")
    for var in test.labels:
        problems += _pair_problem("label", var, labels)
    for what, expected, actual in (
        ("entrypoint", test.entrypoint, config.get("Entrypoint")),
        ("cmd", test.cmd, config.get("Cmd")),
    ):
        if expected is not None and list(expected) != list(actual or []):
            problems.append(f"{what} is {list(actual or [])}, expected {list(expected)}")
    workdir = str(config.get("WorkingDir") or "")
    if test.workdir and test.workdir != workdir:
        problems.append(f"workdir is {workdir!r}, expected {test.workdir!r}")
    user = str(config.get("User") or "")
    if test.user and test.user != user:
        problems.append(f"user is {user!r}, expected {test.user!r}")
    # CST compares bare port numbers: "8080/tcp" in a config never matches, "8080" does.
    ports = [str(p).split("/", 1)[0] for p in (config.get("ExposedPorts") or {})]
    problems += [f"port {p} is not exposed" for p in test.exposed_ports if p not in ports]
    problems += [f"port {p} should not be exposed" for p in test.unexposed_ports if p in ports]
    volumes = list(config.get("Volumes") or {})
    problems += [f"volume {v} is not declared" for v in test.volumes if v not in volumes]
    problems += [f"volume {v} should not be declared" for v in test.unmounted_volumes if v in volumes]
    return CheckResult("metadata", "metadata", not problems, time.monotonic() - started, "; ".join(problems))


def _pair_problem(what: str, var: EnvVar, actual: dict[str, str]) -> list[str]:
    # Like CST, an empty value counts as not set.
    value = actual.get(var.key, "")
    if not value:
        return [f"{what} {var.key} is not set"]
    if var.is_regex:
        return (
            []
            if go_search(var.value, value)
            else [f"{what} {var.key}={value!r} does not match {var.value!r}"]
        )
    return [] if value == var.value else [f"{what} {var.key}={value!r}, expected {var.value!r}"]


# --- running-container checks (our extension) ---------------------------------------------------------------


def _service_check(run: _Run, prepared: _Prepared, test: ServiceTest) -> CheckResult:
    started = time.monotonic()
    deadline = started + min(run.timeout, test.startup_timeout + 30.0)
    run.check_stop()
    name = run.name()
    health = prepared.config.get("Healthcheck") or {}
    has_health = bool(health.get("Test")) and health.get("Test") != ["NONE"]
    mode = test.wait if test.wait != "auto" else ("healthy" if has_health else "port")
    if mode == "healthy" and not has_health:
        return CheckResult(
            test.name, "service", False, 0.0, "wait: healthy, but the image has no HEALTHCHECK"
        )
    if mode == "port" and test.port is None:
        return CheckResult(
            test.name, "service", False, 0.0, "the image has no HEALTHCHECK; give `port:` to wait for"
        )
    try:
        _making_container(
            lambda: run.client.container.run(
                prepared.image_ref,
                list(test.args) if test.args is not None else [],
                detach=True,
                name=name,
                labels=run.labels,
                envs={var.key: var.value for var in test.env_vars},
                platform=prepared.result.target.platform,
                publish=[("127.0.0.1:", test.port)] if test.port is not None else [],
                pull="never",
            ),
            f"starting service {test.name} from {prepared.image_ref}",
        )
        startup_end = min(deadline, started + test.startup_timeout)
        host_port = _host_port(run.client, name, test.port) if test.port is not None else None
        problem = _wait_ready(run, name, mode, host_port, startup_end)
        if problem:
            logs = _tail_logs(run.client, name)
            return CheckResult(test.name, "service", False, time.monotonic() - started, problem, stderr=logs)
        problems = []
        for request in test.requests:
            assert host_port is not None  # the parser demands a port for requests
            left = deadline - time.monotonic()
            if left <= 0:
                problems.append(f"timed out after {run.timeout:.0f}s before {request.method} {request.path}")
                break
            url = f"http://127.0.0.1:{host_port}{request.path}"
            status, body, error = _http(url, request.method, dict(request.headers), min(left, 30.0))
            where = f"{request.method} {request.path}"
            if error:
                problems.append(f"{where}: {error}")
                continue
            if status != request.status:
                problems.append(f"{where}: status {status}, expected {request.status}")
            problems += [
                f"{where}: expected {p!r} not in body"
                for p in request.expected_body
                if not go_search(p, body)
            ]
            problems += [
                f"{where}: excluded {p!r} in body" for p in request.excluded_body if go_search(p, body)
            ]
        # No graceful stop: the container is thrown away, and a server running as PID 1 often ignores
        # SIGTERM, which would cost the whole stop timeout. Removal below kills it.
        return CheckResult(
            test.name, "service", not problems, time.monotonic() - started, "; ".join(problems)
        )
    finally:
        run.remove_container(name)


def _host_port(client: DockerClient, name: str, port: int) -> int:
    inspected = client.container.inspect(name)
    bindings = (
        (inspected.network_settings.ports or {}).get(f"{port}/tcp") if inspected.network_settings else None
    )
    if not bindings:
        raise SmokeError(f"port {port} of {name} was not published; is the container running?")
    return int(bindings[0]["HostPort"])


def _wait_ready(run: _Run, name: str, mode: str, host_port: int | None, deadline: float) -> str:
    """Poll until healthy or the port answers; return why not when the deadline passes."""
    delay = 0.2
    while True:
        run.check_stop()
        state = run.client.container.inspect(name).state
        if not state.running:
            return f"the container exited with code {state.exit_code} before it was ready"
        if mode == "healthy":
            status = state.health.status if state.health is not None else None
            if status == "healthy":
                return ""
            if status == "unhealthy":
                return "its HEALTHCHECK reports unhealthy"
        elif host_port is not None and _port_answers(host_port):
            return ""
        if time.monotonic() >= deadline:
            what = "healthy" if mode == "healthy" else f"port {host_port} to answer"
            return f"not ready: waited for {what} until the startup timeout"
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _port_answers(port: int) -> bool:
    # docker-proxy accepts a connection even when nothing listens inside and then closes it at once; a real
    # listener keeps it open (or talks first), so an immediate EOF means "not yet".
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.settimeout(0.3)
            try:
                return connection.recv(1, socket.MSG_PEEK) != b""
            except TimeoutError:
                return True
    except OSError:
        return False


def _http(url: str, method: str, headers: dict[str, str], timeout: float) -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310  # always http://127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read().decode(errors="replace"), ""
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), ""
    except (urllib.error.URLError, OSError) as error:
        return 0, "", f"no answer ({getattr(error, 'reason', error)})"


def _tail_logs(client: DockerClient, name: str) -> str:
    try:
        logs = client.container.logs(name, tail=20)
    except DockerException:
        return ""
    return _clip(logs) if isinstance(logs, str) else ""


# --- signals and threads ------------------------------------------------------------------------------------


def _raise_on_sigterm() -> Any:
    """Turn SIGTERM (CI cancelling a job) into KeyboardInterrupt, so the finally-cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        return None

    if signal.getsignal(signal.SIGTERM) is signals_policy.handler():
        return None  # the CLI's signal policy already turns SIGTERM into Interrupted (exit 143)

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _join_workers(pool: ThreadPoolExecutor, limit: float) -> None:
    end = time.monotonic() + limit
    for thread in list(getattr(pool, "_threads", ())):
        thread.join(max(end - time.monotonic(), 0.0))


# --- CLI ----------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "smoke",
        help="run the smoke checks against published images, every platform from every registry",
        description=(
            "Pull each image by digest for each platform and run its container-structure-test checks plus the "
            "built-in platform check. With no REF, smoke-tests the config's images in the planned registries."
        ),
    )
    parser.add_argument(
        "references", nargs="*", metavar="REF", help="image references (default: from the config)"
    )
    parser.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        metavar="P",
        help="platform to test, repeatable (default: the image's platforms, or linux/amd64 and linux/arm64)",
    )
    parser.add_argument(
        "--checks", type=Path, default=None, help="container-structure-test YAML for the REFs"
    )
    parser.add_argument(
        "--image", action="append", dest="images", metavar="NAME", help="only these config images"
    )
    parser.add_argument(
        "--registry", action="append", dest="registries", metavar="NAME", help="only these config registries"
    )
    parser.add_argument(
        "--tag",
        default=None,
        help="tag to test for config images (default: this commit's version tag, as `pipeline plan` shows it)",
    )
    parser.add_argument("--parallel", type=int, default=None, help="checks at once (default: CPU count)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per check (default: from the config, 120)"
    )
    parser.add_argument(
        "--no-pull", dest="pull", action="store_false", help="use images already in the engine"
    )
    parser.add_argument("--json", type=Path, default=None, dest="json_path", help="write the report as JSON")
    parser.add_argument(
        "--junit", type=Path, default=None, dest="junit_path", help="write a JUnit XML report"
    )
    parser.add_argument(
        "--require-signature",
        action="store_true",
        help="verify each image's cosign signature and smoke attestation first, then test that digest",
    )
    parser.add_argument(
        "--key", type=Path, default=None, help="cosign public key (default: [sign] public_key)"
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    targets, timeout, registries = _targets_from_args(args)
    from pipeline.sign.verify import verified_if_required  # only the smoke command needs it

    verified = verified_if_required([target.reference for target in targets], args)
    targets = [dataclasses.replace(t, reference=verified.get(t.reference, t.reference)) for t in targets]
    console = Console(stderr=True)
    with _logged_in(registries):
        report = run_smoke(
            targets,
            parallel=args.parallel,
            timeout=args.timeout if args.timeout is not None else timeout,
            pull=args.pull,
            on_progress=lambda line: console.print(line, markup=False, highlight=False),
        )
    Console().print(report.table())
    if args.json_path is not None:
        args.json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if args.junit_path is not None:
        args.junit_path.write_text(report.to_junit_xml())
    if not report.passed:
        first = next((f for t in report.targets for f in t.failures), "")
        raise SmokeError(f"{report.summary()}; first failure: {first}")
    return 0


@contextlib.contextmanager
def _logged_in(registries: Sequence[RegistryConfig]) -> Iterator[None]:
    """The config's registries pull with the config's credentials (username_env/password_env), as in a
    release: a throwaway docker config and our credential helper, nothing written to the user's config.
    REFs given on the command line pull with the user's own docker logins."""
    if not any(r.username_env for r in registries):
        yield
        return
    from pipeline.dockerconfig import isolated_docker_config
    from pipeline.publish import login_all

    with isolated_docker_config():
        login_all(registries)
        yield


def _targets_from_args(
    args: argparse.Namespace,
) -> tuple[list[SmokeTarget], float, tuple[RegistryConfig, ...]]:
    if args.references:
        if args.images or args.registries:
            raise ConfigError(
                "give either REFs or --image/--registry (which select from the config), not both"
            )
        platforms = args.platforms or ["linux/amd64", "linux/arm64"]
        targets = [
            SmokeTarget(
                image=_repository(ref).rsplit("/", 1)[-1],
                registry=_registry_of(ref) if args.pull else LOCAL_ENGINE,
                reference=ref,
                platform=platform,
                checks=args.checks,
            )
            for ref in args.references
            for platform in platforms
        ]
        return targets, 120.0, ()
    from pipeline.config import load_config
    from pipeline.registry import planned_registries

    config = load_config(args.config)
    registries = planned_registries(config)
    if args.registries:
        unknown = sorted(set(args.registries) - {r.name for r in registries})
        if unknown:
            raise ConfigError(f"{config.path}: no planned registry named {unknown[0]!r}")
        registries = tuple(r for r in registries if r.name in args.registries)
    images = [config.image(name) for name in args.images] if args.images else list(config.pipeline.images)
    tags: dict[str, str] = {}
    if args.tag is None:
        from pipeline.plan import make_plan

        # What a release of this commit published first: its version tag (never a moving one).
        tags = {p.name: p.tags[0] for p in make_plan(config, registries=registries).images if p.tags}
    targets = []
    for image in images:
        checks = args.checks or config.smoke_path(image)
        for registry in registries:
            for platform in args.platforms or image.platforms:
                targets.append(
                    SmokeTarget(
                        image.name,
                        registry.name,
                        f"{registry.repository(image.name)}:{args.tag or tags.get(image.name, 'latest')}",
                        platform,
                        checks,
                    )
                )
    return targets, config.pipeline.smoke.timeout, registries


def _registry_of(reference: str) -> str:
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return first
    return "dockerhub"


def main(
    argv: Sequence[str] | None = None,
) -> int:  # pragma: no cover - convenience for `python -m pipeline.smoke`
    from pipeline.cli import main as cli_main

    return cli_main(["smoke", *(argv if argv is not None else sys.argv[1:])])


def iter_failures(report: SmokeReport) -> Iterator[tuple[SmokeTarget, str]]:
    """Every failure line with its target, for callers (the release gate) that print their own summary."""
    for result in report.targets:
        for failure in result.failures:
            yield result.target, failure
