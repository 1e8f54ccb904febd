"""Thin sessions: each installs the package and calls it; the logic lives in `pipeline/`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _provision_engine(session: nox.Session) -> None:
    # Does nothing when an engine with buildx and arm64 already answers (a laptop, a hosted runner).
    session.run("python", "-m", "pipeline", "engine", "up")


def _ensure_debian_tool(session: nox.Session, package: str) -> None:
    # Not on PyPI: installed from Debian where we may (root on Debian); elsewhere the check says how.
    if shutil.which(package) or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", package, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of the pure core and end-to-end tests against a real engine, registries and git repos."""
    session.install("-e", ".[test]")
    _ensure_debian_tool(session, "shellcheck")  # the GitHub lint tests run it
    _provision_engine(session)
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
    _provision_engine(session)
    # The push benchmark's baseline: Debian's skopeo copying the same OCI layout.
    _ensure_debian_tool(session, "skopeo")
    session.run("python", "-m", "bench", *session.posargs)
