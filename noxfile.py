"""Thin sessions: each installs the package and calls it; the logic lives in `pipeline/`."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _provision_engine(session: nox.Session) -> None:
    # Does nothing when an engine with buildx and arm64 already answers (a laptop, a hosted runner).
    session.run("python", "-m", "pipeline", "engine", "up")


def _provision_cosign(session: nox.Session) -> None:
    # The signing tests and bench run the cosign CLI; `release` provisions it itself when [sign] is set.
    session.run("python", "-m", "pipeline", "-q", "cosign")


def _offline_base_for_tests(session: nox.Session) -> None:
    # This project's own tests and benchmarks run on offline hosts whose `FROM alpine` must resolve: they opt
    # in to the busybox stand-in (set up only on an engine the pipeline installed; never for `nox -s release`).
    session.env["PIPELINE_OFFLINE_BASE"] = os.environ.get("PIPELINE_OFFLINE_BASE", "1")


def _ensure_debian_tool(session: nox.Session, package: str) -> None:
    # Not on PyPI: installed from Debian where we may (root on Debian); elsewhere the check says how.
    if shutil.which(package) or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", package, external=True)


def _docker_hub_answers() -> bool:
    # Any HTTP answer (401 included) means the registry is reachable; HTTPS_PROXY is honoured by urllib.
    try:
        urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=10)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _offline_base_for_the_example(session: nox.Session) -> None:
    # The quick start must work on an offline host too. This session's own example publishes only to the
    # embedded loopback registry, and a release refuses to push a stand-in beyond loopback, so the session (not
    # the pipeline) opts in when Docker Hub does not answer, and says so. PIPELINE_OFFLINE_BASE=0 opts out.
    if "PIPELINE_OFFLINE_BASE" in os.environ or _docker_hub_answers():
        return
    session.warn(
        "Docker Hub does not answer: opting in to the offline busybox stand-in for alpine (NOT Alpine; "
        "pushed to loopback registries only). Set PIPELINE_OFFLINE_BASE=0 to refuse it."
    )
    session.env["PIPELINE_OFFLINE_BASE"] = "1"


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of the pure core and end-to-end tests against a real engine, registries and git repos."""
    session.install("-e", ".[test]")
    _offline_base_for_tests(session)
    _ensure_debian_tool(session, "shellcheck")  # the GitHub lint tests run it
    _provision_engine(session)
    _provision_cosign(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict, the Dockerfile lint, and the GitHub workflow/action checks."""
    session.install("-e", ".[lint,test]", "nox")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("python", "-m", "pipeline", "lint")
    if Path(".github").is_dir():
        _ensure_debian_tool(session, "shellcheck")
        session.run("python", "-m", "pipeline.github_lint")


@nox.session
def release(session: nox.Session) -> None:
    """Plan, build both platforms, push by digest, smoke-test every platform from every registry, promote."""
    session.install("-e", ".")
    _offline_base_for_the_example(session)
    _provision_engine(session)
    session.run("python", "-m", "pipeline", "release", *session.posargs)


@nox.session
def plan(session: nox.Session) -> None:
    """What a release would publish (versions, tags, labels), with no side effects."""
    session.install("-e", ".")
    session.run("python", "-m", "pipeline", "plan", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print ratios against a baseline measured in the same run."""
    session.install("-e", ".[test]")
    _offline_base_for_tests(session)
    _provision_engine(session)
    _provision_cosign(session)
    # The push benchmark's baseline: Debian's skopeo copying the same OCI layout.
    _ensure_debian_tool(session, "skopeo")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def deploy(session: nox.Session) -> None:
    """Roll the tested digest (release.json, or --digest IMAGE=sha256:...) out to Docker Swarm ([[deploy]])."""
    session.install("-e", ".")
    # No engine provisioning here: deploy talks to the swarm manager DOCKER_HOST names, never a local setup.
    session.run("python", "-m", "pipeline", "deploy", *session.posargs)
