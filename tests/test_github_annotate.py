"""The glue between GitHub Actions and the CLI: running the CLI without deadlocks, and its annotations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

MEGABYTES = 4


def _noisy_child(path: Path) -> Path:
    """A stand-in for `python -m pipeline`: megabytes on stderr first (as buildx's progress), then on
    stdout, a lint finding on stdout and an `error:` line last, exit 3."""
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import sys
            line = "#7 [linux/arm64 2/3] RUN make " + "x" * 90 + "\\n"
            count = {MEGABYTES} * 1024 * 1024 // len(line)
            for _ in range(count):
                sys.stderr.write(line)
            for _ in range(count):
                sys.stdout.write(line)
            sys.stdout.write("Dockerfile:3: warning PL101: copy the lockfile first\\n")
            sys.stdout.flush()
            sys.stderr.write("error: build of acme/app failed: exit code: 2\\n")
            raise SystemExit(3)
            """
        )
    )
    path.chmod(0o755)
    return path


def test_run_reads_both_streams_at_once_megabytes_each(tmp_path: Path) -> None:
    child = _noisy_child(tmp_path / "child")
    driver = (
        "import os, sys\n"
        "from pipeline.github_annotate import run\n"
        f"raise SystemExit(run(['build'], dict(os.environ), python={str(child)!r}))\n"
    )
    env = {**os.environ, "GITHUB_WORKSPACE": str(tmp_path)}
    # Before the fix this hung: stdout was read to its end while the child blocked on a full stderr pipe.
    result = subprocess.run(
        [sys.executable, "-c", driver],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    noise = "#7 [linux/arm64 2/3] RUN make " + "x" * 90 + "\n"
    expected = (MEGABYTES * 1024 * 1024 // len(noise)) * len(noise)
    # Every byte passed through, in order, on its own stream.
    assert result.stderr.count(noise) * len(noise) == expected
    assert result.stdout.count(noise) * len(noise) == expected
    lines = result.stdout.splitlines()
    assert "::warning file=Dockerfile,line=3::PL101: copy the lockfile first" in lines
    assert "::error::build of acme/app failed: exit code: 2" in lines
