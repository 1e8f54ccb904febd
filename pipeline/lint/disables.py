"""Disable comments: `# pipeline-lint: disable=PL101 reason="..."` (the next instruction, or the one it sits
inside), `disable-file=`, the project's `lint.disable`, and hadolint's own `# hadolint ignore=DL3006` and
`# hadolint global ignore=...`, which also silence our twin rule (the same advice must not need two comments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.config import LintConfig
from pipeline.dockerfile import Dockerfile, Instruction
from pipeline.lint.findings import NO_REASON, STALE_DISABLE, UNKNOWN_CODE, Finding
from pipeline.lint.hadolint import HADOLINT_OVERLAP
from pipeline.lint.rules import RULES

_DISABLE = re.compile(
    r"#\s*pipeline-lint:\s*(disable|disable-file)\s*=\s*([A-Za-z0-9_,\s]+?)"
    r"(?:\s+reason\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|(\S+)))?\s*$"
)
_HADOLINT_IGNORE = re.compile(
    r"#\s*hadolint\s+(global\s+)?ignore\s*=\s*([A-Za-z0-9_,\s]+?)\s*$", re.IGNORECASE
)
FOREIGN_CODE = re.compile(r"^(DL|SC)\d{4}$")


@dataclass
class _Disable:
    line: int
    codes: tuple[str, ...]
    reason: str
    whole_file: bool
    applies: tuple[int, int]
    used: set[str] = field(default_factory=set)
    hadolint: bool = False

    def silences(self, finding: Finding) -> bool:
        twin = HADOLINT_OVERLAP.get(finding.code)
        mine = {pl for dl, pl in HADOLINT_OVERLAP.items() if dl in self.codes} if self.hadolint else set()
        named = finding.code in self.codes or twin in self.codes or finding.code in mine
        return named and self.applies[0] <= finding.line <= self.applies[1]


def _span(dockerfile: Dockerfile, line: int, inside: dict[int, Instruction], whole: bool) -> tuple[int, int]:
    if whole:
        return (1, dockerfile.line_count)
    if line in inside:
        return (inside[line].start_line, inside[line].end_line)
    following = next((i for i in dockerfile.instructions if i.start_line > line), None)
    return (following.start_line, following.end_line) if following else (line, line)


def _codes(text: str) -> tuple[str, ...]:
    return tuple(c.strip().upper() for c in re.split(r"[,\s]+", text) if c.strip())


def _disables(dockerfile: Dockerfile) -> tuple[list[_Disable], list[Finding]]:
    """Each disable comment with the line range it covers: the instruction it sits above or inside."""
    findings: list[Finding] = []
    disables: list[_Disable] = []
    inside = {line: i for i in dockerfile.instructions for line, _ in i.comments}
    comments = sorted(
        {*dockerfile.comments, *((ln, t) for i in dockerfile.instructions for ln, t in i.comments)}
    )
    path = dockerfile.path
    for line, text in comments:
        hadolint = _HADOLINT_IGNORE.match(text)
        if hadolint is not None:
            whole = hadolint.group(1) is not None
            span = _span(dockerfile, line, inside, whole)
            disables.append(_Disable(line, _codes(hadolint.group(2)), "hadolint", whole, span, hadolint=True))
            continue
        if "pipeline-lint" not in text:
            continue
        match = _DISABLE.match(text)
        if match is None:
            findings.append(
                UNKNOWN_CODE.at(
                    path,
                    line,
                    'malformed pipeline-lint comment; write # pipeline-lint: disable=PL101 reason="..."',
                )
            )
            continue
        codes = _codes(match.group(2))
        reason = next((g for g in match.group(3, 4, 5) if g is not None), "").strip()

        for code in codes:
            if code not in RULES and not FOREIGN_CODE.match(code):
                findings.append(
                    UNKNOWN_CODE.at(path, line, f"disable names {code}, which is not a rule code")
                )
        if not reason:
            findings.append(
                NO_REASON.at(
                    path,
                    line,
                    f'disable of {",".join(codes)} gives no reason; add reason="why it does not apply here"',
                )
            )
        whole = match.group(1) == "disable-file"
        disables.append(_Disable(line, codes, reason, whole, _span(dockerfile, line, inside, whole)))
    return disables, findings


def apply_disables(
    dockerfile: Dockerfile, findings: list[Finding], project: dict[str, str], config_path: str | None = None
) -> list[Finding]:
    """Remove findings silenced in the file or the config; report disables without reasons or effect."""
    disables, meta = _disables(dockerfile)
    silenced_project = set(project) | {dl for dl, pl in HADOLINT_OVERLAP.items() if pl in project}
    kept: list[Finding] = []
    for finding in findings:
        if finding.code in silenced_project:
            continue
        hit = next((d for d in disables if d.silences(finding)), None)
        if hit is not None:
            hit.used.add(finding.code)
            continue
        kept.append(finding)
    for disable in disables:
        # A hadolint comment is hadolint's to judge: hadolint already dropped what it silences.
        if not disable.used and not disable.hadolint:
            meta.append(
                STALE_DISABLE.at(
                    dockerfile.path,
                    disable.line,
                    f"disable of {','.join(disable.codes)} matches no finding; remove it",
                )
            )
    return kept + [m for m in meta if m.code not in silenced_project]


def config_findings(lint: LintConfig, config_path: str) -> list[Finding]:

    findings: list[Finding] = []
    for code, reason in lint.disable.items():
        if code not in RULES and not FOREIGN_CODE.match(code):
            findings.append(
                UNKNOWN_CODE.at(config_path, 1, f"lint.disable names {code}, which is not a rule code")
            )
        if not reason.strip():
            findings.append(
                NO_REASON.at(config_path, 1, f'lint.disable.{code} has no reason; write {code} = "why"')
            )
    return findings
