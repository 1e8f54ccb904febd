"""`python -m pipeline.github_lint`: the checks of the workflows and the composite action (run by `nox -s lint`).

- zizmor (offline: no GitHub API calls), zero findings; a finding may only be silenced in the file, with
  `# zizmor: ignore[rule] -- reason`;
- check-jsonschema against its built-in GitHub workflow and action schemas;
- shellcheck on every bash/sh `run:` script, with `${{ ... }}` replaced by a placeholder word;
- every `uses:` of another repository pinned to a full commit SHA with its version in a comment.

Each finding is one `path:line: tool: message` line (and an annotation on GitHub Actions); any finding fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.github import annotation

WORKFLOW_SCHEMA = "vendor.github-workflows"
ACTION_SCHEMA = "vendor.github-actions"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
# A word shellcheck treats as an opaque literal, as the runner's substitution would look to bash.
PLACEHOLDER = "GHA_EXPRESSION"
_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
_VERSION_COMMENT = re.compile(r"^v?[0-9]+(?:\.[0-9]+)*\b")
_ZIZMOR_IGNORE = re.compile(r"#\s*zizmor:\s*ignore\[[^\]]*\](?P<reason>.*)$")
_SHELLCHECK_DISABLE = re.compile(r"#\s*shellcheck\s+disable=[A-Z0-9,]+(?P<reason>.*)$")
_GCC_LINE = re.compile(r"^(?P<file>.*?):(?P<line>[0-9]+):(?P<col>[0-9]+): (?P<level>\w+): (?P<message>.*)$")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    tool: str
    message: str

    def text(self) -> str:
        return f"{self.path}:{self.line}: {self.tool}: {self.message}"


@dataclass(frozen=True)
class Script:
    path: Path
    line: int
    """1-based line in the YAML file of the script's first line."""
    shell: str
    text: str


def discover(root: Path) -> tuple[list[Path], list[Path]]:
    """(workflows, actions) under a repository root."""
    workflows_dir = root / ".github" / "workflows"
    workflows = (
        sorted(p for p in workflows_dir.glob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
        if workflows_dir.is_dir()
        else []
    )
    actions = [p for p in (root / "action.yml", root / "action.yaml") if p.is_file()]
    actions_dir = root / ".github" / "actions"
    if actions_dir.is_dir():
        actions += sorted(actions_dir.rglob("action.y*ml"))
    return workflows, actions


def shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


# --- run: scripts ---------------------------------------------------------------------------------------


def _mapping(node: yaml.Node) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): value for key, value in node.value if isinstance(key, yaml.ScalarNode)}


def _scalar(node: yaml.Node | None) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _default_shell(*mappings: dict[str, yaml.Node]) -> str | None:
    """`defaults.run.shell` of the job, else of the workflow."""
    for mapping in mappings:
        defaults = _mapping(mapping["defaults"]) if "defaults" in mapping else {}
        run = _mapping(defaults["run"]) if "run" in defaults else {}
        shell = _scalar(run.get("shell"))
        if shell:
            return shell
    return None


def _steps(node: yaml.Node | None) -> Iterator[dict[str, yaml.Node]]:
    if isinstance(node, yaml.SequenceNode):
        for step in node.value:
            yield _mapping(step)


def _script(path: Path, step: dict[str, yaml.Node], shell: str) -> Script | None:
    run = step.get("run")
    if not isinstance(run, yaml.ScalarNode):
        return None
    # Block scalars (`|`, `>`) start on the line after the key; plain and quoted ones on the key's line.
    first = run.start_mark.line + (2 if run.style in ("|", ">") else 1)
    return Script(path=path, line=first, shell=_scalar(step.get("shell")) or shell, text=str(run.value))


def scripts(path: Path) -> list[Script]:
    """Every `run:` script of a workflow or a composite action, with the shell it runs under."""
    document = yaml.compose(path.read_text())
    top = _mapping(document) if document is not None else {}
    found: list[Script] = []
    if "jobs" in top:
        for job in _mapping(top["jobs"]).values():
            job_map = _mapping(job)
            shell = _default_shell(job_map, top) or "bash"
            for step in _steps(job_map.get("steps")):
                script = _script(path, step, shell)
                if script:
                    found.append(script)
    runs = _mapping(top["runs"]) if "runs" in top else {}
    for step in _steps(runs.get("steps")):
        script = _script(path, step, "bash")
        if script:
            found.append(script)
    return found


def shell_dialect(shell: str) -> str | None:
    """shellcheck's dialect for a `shell:` value, or None for shells it cannot check (python, pwsh)."""
    program = shell.split(maxsplit=1)[0].rsplit("/", 1)[-1]
    return {"bash": "bash", "sh": "sh", "dash": "dash", "ksh": "ksh"}.get(program)


def shellcheck(scripts_: Sequence[Script], root: Path, binary: str) -> list[Finding]:
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="github-lint-") as scratch:
        for number, script in enumerate(scripts_):
            dialect = shell_dialect(script.shell)
            if dialect is None:
                continue
            target = Path(scratch) / f"script{number}.sh"
            target.write_text(EXPRESSION.sub(PLACEHOLDER, script.text))
            result = subprocess.run(
                [binary, "--format=gcc", f"--shell={dialect}", "--external-sources", str(target)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode not in (0, 1):
                raise RuntimeError(f"shellcheck failed: {result.stderr.strip()}")
            for line in result.stdout.splitlines():
                match = _GCC_LINE.match(line)
                if match:
                    findings.append(
                        Finding(
                            shown(script.path, root),
                            script.line + int(match["line"]) - 1,
                            "shellcheck",
                            f"{match['level']}: {match['message']}",
                        )
                    )
    return findings


# --- pins and suppressions ------------------------------------------------------------------------------


def pin_findings(path: Path, root: Path) -> list[Finding]:
    """Every other repository's action pinned to a full commit SHA, with the version it is in a comment."""
    findings: list[Finding] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _USES.match(line)
        if not match:
            continue
        ref = match["ref"].strip("'\"")
        if ref.startswith(("./", "docker://")) or EXPRESSION.search(ref):
            continue
        if not _PINNED.match(ref):
            findings.append(
                Finding(shown(path, root), number, "pins", f"{ref}: pin to a full 40-character commit SHA")
            )
        elif not _VERSION_COMMENT.match((match["comment"] or "").strip()):
            findings.append(
                Finding(
                    shown(path, root), number, "pins", f"{ref}: add the version the SHA is, as `# vX.Y.Z`"
                )
            )
    return findings


def suppression_findings(path: Path, root: Path) -> list[Finding]:
    """A silenced finding must say why, on the same line."""
    findings: list[Finding] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for pattern, tool in ((_ZIZMOR_IGNORE, "zizmor"), (_SHELLCHECK_DISABLE, "shellcheck")):
            match = pattern.search(line)
            if match and len(match["reason"].strip(" -#:")) < 8:
                findings.append(
                    Finding(shown(path, root), number, tool, "suppression without a reason; say why")
                )
    return findings


# --- the external tools ---------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """The tool beside this interpreter (a venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else (shutil.which(name) or "")


def zizmor(paths: Sequence[Path], root: Path) -> tuple[list[Finding], str]:
    binary = _tool("zizmor")
    if not binary:
        return [Finding(".", 0, "zizmor", "zizmor is not installed (pip install zizmor)")], ""
    result = subprocess.run(
        [binary, "--offline", "--no-progress", "--color=never", "--format=plain", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if result.returncode == 0:
        return [], result.stdout
    findings = _zizmor_findings(result.stdout, root)
    if not findings:
        findings = [Finding(".", 0, "zizmor", f"exit {result.returncode}: {result.stderr.strip()[-500:]}")]
    return findings, result.stdout


def _zizmor_findings(output: str, root: Path) -> list[Finding]:
    findings: list[Finding] = []
    title: str | None = None
    for line in output.splitlines():
        head = re.match(r"^(error|warning|help|info|note)\[(?P<rule>[\w-]+)\]: (?P<message>.*)$", line)
        if head:
            title = f"{head['rule']}: {head['message']}"
            continue
        where = re.match(r"^\s*-->\s*(?P<file>.+?):(?P<line>[0-9]+):[0-9]+$", line)
        if where and title:
            findings.append(Finding(shown(Path(where["file"]), root), int(where["line"]), "zizmor", title))
            title = None
    return findings


def check_schema(paths: Sequence[Path], schema: str, root: Path) -> list[Finding]:
    if not paths:
        return []
    binary = _tool("check-jsonschema")
    if not binary:
        return [
            Finding(
                ".", 0, "check-jsonschema", "check-jsonschema is not installed (pip install check-jsonschema)"
            )
        ]
    result = subprocess.run(
        [binary, "--builtin-schema", schema, "--color", "never", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    if result.returncode == 0:
        return []
    detail = (result.stdout + result.stderr).strip()
    return [Finding(shown(paths[0], root) if len(paths) == 1 else ".", 0, "check-jsonschema", detail)]


# --- everything -----------------------------------------------------------------------------------------


def lint(root: Path) -> tuple[list[Finding], int]:
    """All findings for the repository at `root`, and how many files were checked."""
    workflows, actions = discover(root)
    files = workflows + actions
    if not files:
        return [], 0
    findings: list[Finding] = []
    zizmor_findings, _ = zizmor(files, root)
    findings += zizmor_findings
    findings += check_schema(workflows, WORKFLOW_SCHEMA, root)
    findings += check_schema(actions, ACTION_SCHEMA, root)
    binary = _tool("shellcheck")
    if not binary:
        findings.append(
            Finding(
                ".",
                0,
                "shellcheck",
                "shellcheck is not installed (Debian/Ubuntu: apt-get install shellcheck)",
            )
        )
    else:
        all_scripts = [script for path in files for script in scripts(path)]
        findings += shellcheck(all_scripts, root, binary)
    for path in files:
        findings += pin_findings(path, root)
        findings += suppression_findings(path, root)
    return findings, len(files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.github_lint", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "root", nargs="?", type=Path, default=Path.cwd(), help="repository root (default: cwd)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    findings, checked = lint(root)
    on_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    for finding in findings:
        print(finding.text())
        if on_actions:
            print(
                annotation(
                    "error",
                    f"{finding.tool}: {finding.message}",
                    file=finding.path,
                    line=finding.line or None,
                )
            )
    tools = "zizmor, check-jsonschema, shellcheck, pins"
    print(f"github-lint: {checked} file(s), {len(findings)} finding(s) ({tools})")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
