"""PL32x/PL332 what COPY and ADD bring in: ADD's magic, unverified downloads, credential files."""

from __future__ import annotations

import re

from pipeline.dockerfile import Instruction, Stage
from pipeline.lint.copies import context_sources
from pipeline.lint.findings import Finding, Rule, Severity
from pipeline.lint.model import BuildModel

ADD_LOCAL = Rule("PL320", "warning", "ADD of local files", "use COPY; keep ADD for archives to extract")
ADD_UNVERIFIED = Rule(
    "PL321", "warning", "ADD of a URL without --checksum", "add --checksum=sha256:... or download in a RUN"
)
CREDENTIAL_FILE = Rule(
    "PL332", "warning", "credential file copied into the image", "use RUN --mount=type=secret,id=..."
)
RULES = (ADD_LOCAL, ADD_UNVERIFIED, CREDENTIAL_FILE)

_ARCHIVE = re.compile(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst)$")
_URL = re.compile(r"^https?://", re.IGNORECASE)
_PLACEHOLDER_HOST = re.compile(
    r"^https?://([^/@]*@)?(localhost|127\.0\.0\.1|[\w.-]*example\.(com|org|net))[:/]"
)
_VERIFIERS = frozenset({"sha256sum", "sha512sum", "sha1sum", "shasum", "md5sum", "gpg", "cosign", "minisign"})
# Always private: a copy of one of these puts a credential in a layer.
_PRIVATE = re.compile(
    r"(^|/)(id_rsa|id_dsa|id_ecdsa|id_ed25519|\.netrc|\.pypirc|\.git-credentials|\.dockercfg|credentials(\.json)?|"
    r"\.aws|\.ssh|\.docker/config\.json)/?$"
)
# Private or not depending on what they hold: read them when the context is at hand.
_MAYBE = re.compile(r"(^|/)(\.npmrc|\.yarnrc(\.yml)?|\.env|[\w.-]+\.pem|[\w.-]+\.key)/?$")
_SECRET_CONTENT = re.compile(
    r"PRIVATE KEY-----|_authToken|_auth\s*=|_password\s*=|npmAuthToken|(^|\n)\s*[A-Z_]*(PASSWORD|SECRET|TOKEN|"
    r"API_?KEY)[A-Z_]*\s*=\s*\S"
)


def check(model: BuildModel) -> list[Finding]:
    findings: list[Finding] = []
    for stage in model.built:
        for instruction in stage.instructions:
            if instruction.keyword == "ADD":
                findings += _add(model, stage, instruction)
            if instruction.keyword in ("COPY", "ADD"):
                findings += _credentials(model, instruction)
    return findings


def _verified_later(model: BuildModel, stage: Stage, instruction: Instruction, url: str) -> bool:
    """The next RUN checks the download (sha256sum -c, gpg --verify) naming the file or its folder."""
    words = instruction.words()
    destination = words[-1] if words else ""
    names = {url.rstrip("/").rsplit("/", 1)[-1], destination.rstrip("/").rsplit("/", 1)[-1], destination}
    later = stage.instructions[stage.instructions.index(instruction) + 1 :]
    run = next((i for i in later if i.keyword == "RUN"), None)
    if run is None:
        return False
    verifies = any(c.name in _VERIFIERS for c in model.commands(run))
    return verifies and any(name and name in run.command_text for name in names)


def _add(model: BuildModel, stage: Stage, instruction: Instruction) -> list[Finding]:
    if instruction.flag("from") is not None:
        return []
    if instruction.heredocs:
        return [
            ADD_LOCAL.at(model.path, instruction.start_line, "ADD of an inline file; use COPY <<EOF instead")
        ]
    findings: list[Finding] = []
    words = instruction.words()
    for source in words[:-1]:
        if (
            _URL.match(source)
            and instruction.flag("checksum") is None
            and not _PLACEHOLDER_HOST.match(source)
            and not _verified_later(model, stage, instruction, source)
        ):
            findings.append(
                ADD_UNVERIFIED.at(
                    model.path,
                    instruction.start_line,
                    f"ADD {source} is not verified; add --checksum=sha256:<digest> so a changed download fails",
                )
            )
    local = [s for s in context_sources(instruction) if not _ARCHIVE.search(s)]
    if local:
        findings.append(
            ADD_LOCAL.at(
                model.path,
                instruction.start_line,
                f"ADD {' '.join(local)} copies local files with ADD's extra magic (URL fetch, tar extraction); "
                "use COPY",
            )
        )
    return findings


def _credentials(model: BuildModel, instruction: Instruction) -> list[Finding]:
    findings: list[Finding] = []
    for source in context_sources(instruction):
        cleaned = source.rstrip("/")
        severity: Severity | None = None
        if _PRIVATE.search(cleaned):
            severity = "warning"
        elif _MAYBE.search(cleaned):
            text = model.context.read(cleaned) if model.context is not None else None
            if text is None:
                severity = "info"  # not readable here: it may hold only settings or a public key
            elif _SECRET_CONTENT.search(text):
                severity = "warning"
        if severity is not None:
            findings.append(
                CREDENTIAL_FILE.at(
                    model.path,
                    instruction.start_line,
                    f"{source} looks like a credential and stays in the layer even if deleted later; use RUN "
                    "--mount=type=secret,id=NAME for the step that needs it",
                    severity=severity,
                )
            )
    return findings
