"""PL2xx package hygiene: package indexes and download caches left in the layers that ship."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.dockerfile import Instruction, Stage
from pipeline.lint.commands import dependency_install, normalize
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel
from pipeline.lint.shell import Command

APK_INDEX = Rule("PL201", "warning", "apk keeps its index in the layer", "use apk add --no-cache")
APT_UPDATE_ALONE = Rule(
    "PL202",
    "error",
    "apt-get update in a RUN without apt-get install",
    "run apt-get update && apt-get install in the same RUN",
)
APT_LISTS = Rule(
    "PL203",
    "warning",
    "apt lists left in the image",
    "end the RUN with rm -rf /var/lib/apt/lists/* or use a cache mount",
)
PIP_CACHE = Rule(
    "PL204",
    "warning",
    "Python package cache left in the image",
    "pip install --no-cache-dir (uv: --no-cache), or a --mount=type=cache for the cache directory",
)
JS_CACHE = Rule(
    "PL205",
    "info",
    "npm/yarn/pnpm cache left in the image",
    "clean the cache in the same RUN or use --mount=type=cache for it",
)
RULES = (APK_INDEX, APT_UPDATE_ALONE, APT_LISTS, PIP_CACHE, JS_CACHE)

_TRUE = ("1", "true", "yes", "on")
_CACHE_MOUNTS = ("cache", "tmpfs")


def check(model: BuildModel) -> list[Finding]:
    findings: list[Finding] = []
    for stage in model.built:
        for instruction in model.runs(stage):
            findings += _apt_update_alone(model, instruction)
    for stage in model.shipped:
        for instruction in model.runs(stage):
            findings += _hygiene(model, stage, instruction)
    return findings


def _removes(commands: Sequence[Command], *paths: str) -> bool:
    """An `rm` (any options, long or short) of a path under one of `paths`."""
    return any(
        c.name == "rm" and any(arg.startswith(path) for arg in c.args for path in paths) for c in commands
    )


def _apt(commands: Sequence[Command], *subs: str) -> bool:
    return any(
        (n := normalize(c)).name in ("apt-get", "aptitude") and n.subcommand(("-o", "-t", "-c")) in subs
        for c in commands
    )


def _apt_update_alone(model: BuildModel, instruction: Instruction) -> list[Finding]:
    commands = model.commands(instruction)
    if _apt(commands, "update") and not _apt(
        commands, "install", "upgrade", "dist-upgrade", "full-upgrade", "build-dep"
    ):
        return [
            APT_UPDATE_ALONE.at(
                model.path,
                instruction.start_line,
                "apt-get update alone in a RUN caches a stale package index that later installs reuse; run "
                "apt-get update && apt-get install ... in one RUN",
            )
        ]
    return []


def _hygiene(model: BuildModel, stage: Stage, instruction: Instruction) -> list[Finding]:
    commands = model.commands(instruction)
    line, label = instruction.start_line, stage.label
    findings: list[Finding] = []
    if _apk_keeps_index(model, instruction, commands):
        findings.append(
            APK_INDEX.at(
                model.path,
                line,
                f"apk keeps the package index in the {label} layer; use apk add --no-cache (and drop apk update)",
            )
        )
    if (
        _apt(commands, "update")
        and not _removes(commands, "/var/lib/apt/lists")
        and not model.has_mount(instruction, _CACHE_MOUNTS, ("/var/lib/apt",))
    ):
        findings.append(
            APT_LISTS.at(
                model.path,
                line,
                f"apt lists stay in the {label} layer (tens of MB); end this RUN with && rm -rf "
                "/var/lib/apt/lists/* or mount a cache on /var/lib/apt",
            )
        )
    variables = model.stage_variables(stage, before=instruction)
    tool = _python_cache_left(model, instruction, commands, variables)
    if tool is not None:
        findings.append(
            PIP_CACHE.at(
                model.path,
                line,
                f"{tool} keeps its download cache in the {label} layer; add "
                + (
                    "--no-cache-dir (or ENV PIP_NO_CACHE_DIR=1, or --mount=type=cache,target=/root/.cache/pip)"
                    if tool == "pip"
                    else "--no-cache or --mount=type=cache,target=/root/.cache/uv"
                ),
            )
        )
    js = _js_cache_left(model, instruction, commands)
    if js is not None:
        findings.append(
            JS_CACHE.at(
                model.path,
                line,
                f"{js}'s download cache stays in the {label} layer; clean it in the same RUN or use "
                "--mount=type=cache for it",
            )
        )
    return findings


def _apk_keeps_index(model: BuildModel, instruction: Instruction, commands: Sequence[Command]) -> bool:
    apk = [c for c in commands if c.name == "apk"]
    writes_index = any(
        c.subcommand(("-X", "--repository", "-t", "--virtual", "-p", "--root")) == "update"
        or (
            c.subcommand(("-X", "--repository", "-t", "--virtual")) in ("add", "upgrade")
            and not c.option("--no-cache")
        )
        for c in apk
    )
    return (
        writes_index
        and not _removes(commands, "/var/cache/apk")
        and not model.has_mount(instruction, _CACHE_MOUNTS, ("/var/cache/apk", "/etc/apk/cache"))
    )


def _python_cache_left(
    model: BuildModel, instruction: Instruction, commands: Sequence[Command], variables: dict[str, str | None]
) -> str | None:
    cleaned = _removes(commands, "/root/.cache", "~/.cache", "$HOME/.cache") or any(
        normalize(c).name == "pip" and normalize(c).subcommand() == "cache" for c in commands
    )
    if cleaned or model.has_mount(instruction, _CACHE_MOUNTS, ("/root/.cache", "pip", "uv")):
        return None
    for command in (normalize(c) for c in commands):
        if command.name == "pip" and command.subcommand() == "install":
            if command.option_prefix("--no-cache-dir", "--no-cache") or command.option("--no-index"):
                continue
            if (variables.get("PIP_NO_CACHE_DIR") or "").lower() in (*_TRUE, "off"):
                continue
            return "pip"
        if command.name == "uv" and (
            command.subcommand() == "sync" or command.args[:2] == ("pip", "install")
        ):
            if command.option("--no-cache", "-n") or (variables.get("UV_NO_CACHE") or "").lower() in _TRUE:
                continue
            return "uv"
    return None


def _js_cache_left(model: BuildModel, instruction: Instruction, commands: Sequence[Command]) -> str | None:
    cleaned = any(
        (c.name in ("npm", "yarn") and c.args[:2] == ("cache", "clean"))
        or (c.name == "pnpm" and c.args[:2] == ("store", "prune"))
        for c in commands
    ) or _removes(
        commands,
        "/root/.npm",
        "~/.npm",
        "$HOME/.npm",
        "/usr/local/share/.cache",
        "/root/.cache",
        "~/.cache",
        "/root/.yarn",
        "/root/.local/share/pnpm",
    )
    if cleaned or model.has_mount(instruction, _CACHE_MOUNTS, ("npm", "yarn", "pnpm", ".cache")):
        return None
    for command in commands:
        found = dependency_install(command)
        # `--offline` installs from a store an earlier step filled (`pnpm fetch`): it downloads nothing.
        if command.option("--offline"):
            continue
        if found is not None and found.ecosystem in ("npm", "yarn", "pnpm") and found.kind != "tool":
            return found.ecosystem
    return None
