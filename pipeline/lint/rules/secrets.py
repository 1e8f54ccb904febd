"""PL33x secrets in ENV/ARG names and in values written into the Dockerfile."""

from __future__ import annotations

import re

from pipeline.dockerfile import Instruction
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel, assignments

SECRET_NAME = Rule(
    "PL330",
    "warning",
    "secret-looking ENV/ARG name",
    "pass secrets with RUN --mount=type=secret; ENV and ARG values stay in the image history",
)
SECRET_VALUE = Rule(
    "PL331", "error", "secret value in the Dockerfile", "remove it, rotate it, and use --mount=type=secret"
)
RULES = (SECRET_NAME, SECRET_VALUE)

_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?|AUTH_?KEY)", re.IGNORECASE
)
# A name that points at a secret, or configures one, instead of holding it (`DB_PASSWORD_FILE=/run/...`).
_SECRET_POINTER = re.compile(
    r"_(FILE|PATH|DIR|ENV|NAME|ID|HEADER|URL_ENV|LENGTH|MIN_LENGTH|POLICY|TTL|TIMEOUT|EXPIRY|EXPIRES|"
    r"ALGORITHM|PROVIDER|TYPE|SOURCE)$",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|glpat-[A-Za-z0-9_-]{20}|"
    r"xox[abpr]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{16,}|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]{3,}@[^/\s]+)"
)
_PLACEHOLDER = re.compile(
    r"://[^/\s:@]+:(password|passwd|pass|secret|changeme|xxx+|\*+|<[^>]*>|\{[^}]*\})@|"
    r"@(localhost|127\.0\.0\.1|[\w.-]*example\.(com|org|net))\b",
    re.IGNORECASE,
)


def check(model: BuildModel) -> list[Finding]:
    findings: list[Finding] = []
    for instruction in model.dockerfile.instructions:
        findings += _secrets(model, instruction)
    return findings


def _credential(text: str) -> bool:
    return any(not _PLACEHOLDER.search(m.group(0)) for m in _SECRET_VALUE.finditer(text))


def _secrets(model: BuildModel, instruction: Instruction) -> list[Finding]:
    findings: list[Finding] = []
    if instruction.keyword in ("ENV", "ARG"):
        for name, value in assignments(instruction):
            if _SECRET_NAME.search(name) and not _SECRET_POINTER.search(name):
                findings.append(
                    SECRET_NAME.at(
                        model.path,
                        instruction.start_line,
                        f"{instruction.keyword} {name} looks like a secret and is visible in the image history; "
                        "use RUN --mount=type=secret,id=... (or a *_FILE pointer) instead",
                    )
                )
            elif value and _credential(value):
                findings.append(
                    SECRET_VALUE.at(
                        model.path,
                        instruction.start_line,
                        f"{instruction.keyword} {name} holds what looks like a credential; remove it, rotate it, "
                        "and pass it with --mount=type=secret",
                    )
                )
    elif instruction.keyword in ("RUN", "LABEL") and _credential(instruction.command_text):
        findings.append(
            SECRET_VALUE.at(
                model.path,
                instruction.start_line,
                f"this {instruction.keyword} contains what looks like a credential (token, key or user:password@ "
                "URL) that stays in the image history; remove it, rotate it, use --mount=type=secret",
                instruction.end_line,
            )
        )
    return findings
