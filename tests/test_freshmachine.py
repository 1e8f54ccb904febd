"""The fresh-machine guard finds the two leaks it is there for, and stays quiet on a clean setup."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.fixtures.freshmachine import TOOLS, problems, project_leak, tool_problem

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_venv(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    return root / "bin" / "python"


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def test_an_interpreter_that_sees_the_repository_is_a_leak(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "leaky")
    # What `pip install -e .` into a base interpreter amounts to: the repository on its sys.path.
    (site_packages(python) / "leak.pth").write_text(f"{REPO_ROOT}\n")
    leak = project_leak(python, REPO_ROOT)
    assert leak is not None and leak.startswith(str(python))
    assert leak.endswith(f"uninstall it there ({python} -m pip uninstall image-pipeline)")


def test_a_clean_interpreter_is_no_leak(tmp_path: Path) -> None:
    assert project_leak(make_venv(tmp_path / "clean"), REPO_ROOT) is None


def test_a_tool_outside_the_venv_is_named_with_where_it_resolved(tmp_path: Path) -> None:
    # A tool name the venv cannot have, so that only the stray copy on PATH can answer.
    stray = tmp_path / "bin"
    stray.mkdir()
    tool = stray / "pipeline-test-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    found = tool_problem("pipeline-test-tool", str(stray))
    assert found is not None and found.startswith(f"pipeline-test-tool resolves to {tool}, outside")
    missing = tool_problem("pipeline-test-tool", str(tmp_path / "empty"))
    assert missing is not None and "is not installed in the session's venv" in missing


def test_this_session_is_clean() -> None:
    # The tests run in a venv that has every tool and no leak; this is what the guard checked at start-up.
    venv_bin = sysconfig.get_path("scripts")
    assert all(Path(venv_bin, tool).is_file() for tool in TOOLS)
    assert problems(REPO_ROOT, os.environ["PATH"]) == []
