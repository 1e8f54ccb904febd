"""A Dockerfile parser that keeps what a linter needs: every instruction with its source line range.

Pure (no I/O besides `parse_file`): parser directives (`# syntax=`, `# escape=`), continuation lines with
the escape character, comments and blank lines inside continuations, heredocs (`RUN <<EOF`, `COPY <<EOF`),
`ARG` before the first `FROM`, named stages, `--flags`, and exec (JSON) versus shell form.
It follows BuildKit's Dockerfile frontend rules where they matter for linting, and never raises on odd
input: what it cannot make sense of is recorded in `Dockerfile.problems` with a line number.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
# Instructions whose arguments BuildKit scans for heredocs.
HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
# Instructions whose leading `--name[=value]` words are flags rather than arguments.
FLAG_INSTRUCTIONS = frozenset({"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"})

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
# `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`; not `<<<` (a here-string) nor `$((a<<2))`.
_HEREDOC = re.compile(r"(?<![<\w$])<<(-?)\s*(?:([\"'])([A-Za-z_][\w.-]*)\2|([A-Za-z_][\w.-]*))")
_SOURCE_DIRS = frozenset(
    {
        "src",
        "app",
        "lib",
        "cmd",
        "pkg",
        "internal",
        "server",
        "client",
        "web",
        "site",
        "public",
        "static",
        "components",
        "pages",
        "content",
        "templates",
        "main",
        "source",
        "sources",
        "api",
    }
)
_SOURCE_GLOB = re.compile(r"^\*\.(py|go|js|mjs|ts|tsx|rs|java|kt|rb|php|c|cc|cpp|h|html|css)$")
# BuildKit defines these for every build; FROM lines may use them without declaring them.
AUTOMATIC_ARGS: dict[str, str | None] = {
    "TARGETPLATFORM": "linux/amd64",
    "TARGETOS": "linux",
    "TARGETARCH": "amd64",
    "TARGETVARIANT": "",
    "BUILDPLATFORM": "linux/amd64",
    "BUILDOS": "linux",
    "BUILDARCH": "amd64",
    "BUILDVARIANT": "",
}
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Flag:
    """One `--name=value` (or bare `--name`) flag of an instruction."""

    name: str
    value: str | None

    def options(self) -> dict[str, str]:
        """`--mount=type=cache,target=/x` as `{'type': 'cache', 'target': '/x'}`."""
        result: dict[str, str] = {}
        for part in (self.value or "").split(","):
            key, _, value = part.partition("=")
            if key:
                result[key.strip().lower()] = value.strip()
        return result


@dataclass(frozen=True)
class Heredoc:
    delimiter: str
    body: str
    start_line: int
    end_line: int
    strip_tabs: bool
    quoted: bool


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-case instruction name (`RUN`, `COPY`, ...)."""
    original: str
    """The logical line as written after the keyword, continuations joined with a space."""
    flags: tuple[Flag, ...]
    arguments: str
    """The text after the flags: a shell command, a JSON array, or the instruction's operands."""
    exec_form: tuple[str, ...] | None
    """The parsed JSON array for exec form (`["a", "b"]`), None for shell form."""
    heredocs: tuple[Heredoc, ...]
    start_line: int
    end_line: int
    """1-based, inclusive; covers continuations and heredoc bodies."""
    comments: tuple[tuple[int, str], ...] = ()
    """Comment lines inside this instruction's continuation, with their line numbers."""
    stage: int = -1
    """Index of the stage this instruction belongs to; -1 before the first FROM."""

    def flag(self, name: str) -> Flag | None:
        for item in self.flags:
            if item.name == name:
                return item
        return None

    def flag_all(self, name: str) -> tuple[Flag, ...]:
        return tuple(item for item in self.flags if item.name == name)

    def words(self) -> list[str]:
        """The operands split like a shell would, or the exec-form list; never raises."""
        if self.exec_form is not None:
            return list(self.exec_form)
        return split_words(self.arguments)

    @property
    def command_text(self) -> str:
        """What a RUN executes: the shell command plus any heredoc bodies (which are part of the script)."""
        text = " ".join(self.exec_form) if self.exec_form is not None else self.arguments
        return "\n".join([text, *(h.body for h in self.heredocs)])

    def mounts(self) -> list[dict[str, str]]:
        return [item.options() for item in self.flag_all("mount")]


@dataclass
class Stage:
    index: int
    base: str
    """The image or stage reference as written (`${BASE}`, `golang:1.22 AS build` -> `golang:1.22`)."""
    name: str | None
    platform: str | None
    from_instruction: Instruction
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"stage {self.index}"


@dataclass
class Dockerfile:
    path: str
    directives: dict[str, str]
    escape: str
    instructions: list[Instruction]
    stages: list[Stage]
    global_args: dict[str, str | None]
    """ARGs declared before the first FROM, with their defaults."""
    comments: list[tuple[int, str]]
    """Every comment line in the file (outside heredoc bodies), with its line number."""
    problems: list[tuple[int, str]]
    """What the parser could not make sense of, as (line, message)."""
    line_count: int

    def stage_by_name(self, name: str) -> Stage | None:
        lowered = name.lower()
        for stage in self.stages:
            if stage.name is not None and stage.name.lower() == lowered:
                return stage
        if name.isdigit() and int(name) < len(self.stages):
            return self.stages[int(name)]
        return None

    def resolve_base(self, stage: Stage) -> str:
        """The base with global ARG defaults substituted, as BuildKit would do without --build-arg: defaults
        that name other args (`ARG BASE=alpine:${V}`) are expanded too, and BuildKit's automatic platform args
        (`TARGETARCH`, ...) take the values of a linux/amd64 build."""
        variables: dict[str, str | None] = dict(AUTOMATIC_ARGS)
        for key, value in self.global_args.items():
            if value is not None or key not in AUTOMATIC_ARGS:
                variables[key] = expand(value, variables) if value is not None else None
        return expand(stage.base, variables)

    def parent_stage(self, stage: Stage) -> Stage | None:
        """The earlier stage this one builds `FROM`, if any."""
        found = self.stage_by_name(self.resolve_base(stage))
        return found if found is not None and found.index < stage.index else None

    @property
    def final_stage(self) -> Stage | None:
        return self.stages[-1] if self.stages else None

    def stage_of(self, target: str | None) -> Stage | None:
        if target is None:
            return self.final_stage
        return self.stage_by_name(target)


def is_broad_source(source: str) -> bool:
    """Whether a COPY source is a source tree (`.`, `src/`, `*.py`) rather than a manifest or config file."""
    cleaned = source.removeprefix("./").rstrip("/") or "."
    if cleaned in (".", "*", "./*") or _SOURCE_GLOB.match(cleaned):
        return True
    return cleaned.split("/", 1)[0] in _SOURCE_DIRS


def split_words(text: str) -> list[str]:
    """Shell-like split that tolerates unbalanced quotes (Dockerfiles in the wild have them)."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()


def expand(text: str, variables: dict[str, str | None]) -> str:
    """Substitute `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}`; unknown names are left as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        operator, word = match.group(2), match.group(3) or ""
        known = name in variables and variables[name] is not None
        value = variables.get(name) or ""
        if operator in (":-", "-"):
            return value if (known and (value or operator == "-")) else word
        if operator in (":+", "+"):
            return word if known and (value or operator == "+") else ""
        return value if known else match.group(0)

    return _VARIABLE.sub(replace, text)


def _split_flags(text: str) -> tuple[tuple[Flag, ...], str]:
    flags: list[Flag] = []
    rest = text.lstrip()
    while rest.startswith("--"):
        match = re.match(r"--([A-Za-z][A-Za-z0-9-]*)(?:=((?:\"[^\"]*\"|'[^']*'|\S)*))?(?:\s+|$)", rest)
        if match is None:
            break
        value = match.group(2)
        if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        flags.append(Flag(match.group(1).lower(), value))
        rest = rest[match.end() :]
    return tuple(flags), rest.strip()


def _exec_form(arguments: str) -> tuple[str, ...] | None:
    if not arguments.startswith("["):
        return None
    try:
        value = json.loads(arguments)
    except ValueError:
        # BuildKit runs an invalid JSON array as a shell command; so do we (hadolint reports it).
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def _ends_with_escape(line: str, escape: str) -> bool:
    # BuildKit treats the escape character followed only by blanks at the end of a line as a continuation.
    return line.rstrip(" \t").endswith(escape)


def parse(text: str, path: str = "Dockerfile") -> Dockerfile:
    lines = text.splitlines()
    directives: dict[str, str] = {}
    comments: list[tuple[int, str]] = []
    problems: list[tuple[int, str]] = []
    index = 0
    # Directives are only recognised before any blank line, comment or instruction.
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index].strip()) if lines[index].strip() else None
        if match is None or match.group(1).lower() not in KNOWN_DIRECTIVES:
            break
        key = match.group(1).lower()
        if key in directives:
            problems.append((index + 1, f"parser directive {key!r} is given twice; keep one"))
        directives[key] = match.group(2)
        comments.append((index + 1, lines[index].strip()))
        index += 1
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        problems.append((1, f"escape directive {escape!r} is invalid (use \\ or `); assuming \\"))
        escape = "\\"

    instructions: list[Instruction] = []
    stages: list[Stage] = []
    global_args: dict[str, str | None] = {}
    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip()
        if not stripped:
            index += 1
            continue
        if stripped.startswith("#"):
            comments.append((index + 1, stripped))
            index += 1
            continue
        start = index + 1
        inner_comments: list[tuple[int, str]] = []
        parts: list[str] = []
        current = raw
        while True:
            if _ends_with_escape(current, escape):
                parts.append(current.rstrip(" \t")[:-1])
                index += 1
                # Comment and blank lines inside a continuation are dropped by BuildKit.
                while index < len(lines) and (
                    not lines[index].strip() or lines[index].strip().startswith("#")
                ):
                    if lines[index].strip():
                        inner_comments.append((index + 1, lines[index].strip()))
                    index += 1
                if index >= len(lines):
                    break
                current = lines[index]
                continue
            parts.append(current)
            break
        logical = " ".join(part.strip() for part in parts if part.strip())
        end = min(index + 1, len(lines))
        index += 1
        keyword, _, remainder = logical.partition(" ")
        keyword = keyword.upper()
        if not re.fullmatch(r"[A-Z]+", keyword):
            problems.append(
                (
                    start,
                    f"{logical[:40]!r} is not an instruction (check the line above for a missing {escape})",
                )
            )
            continue
        flags: tuple[Flag, ...] = ()
        arguments = remainder.strip()
        if keyword in FLAG_INSTRUCTIONS:
            flags, arguments = _split_flags(remainder)
        heredocs: list[Heredoc] = []
        if keyword in HEREDOC_INSTRUCTIONS and "<<" in arguments:
            for match in _HEREDOC.finditer(arguments):
                strip_tabs = match.group(1) == "-"
                delimiter = match.group(3) or match.group(4)
                body_start = index
                body: list[str] = []
                terminated = False
                while index < len(lines):
                    candidate = lines[index].lstrip("\t") if strip_tabs else lines[index]
                    index += 1
                    if candidate.rstrip() == delimiter:
                        terminated = True
                        break
                    body.append(candidate)
                if not terminated:
                    problems.append(
                        (start, f"heredoc <<{delimiter} is never closed; add a line holding only {delimiter}")
                    )
                heredocs.append(
                    Heredoc(
                        delimiter=delimiter,
                        body="\n".join(body),
                        start_line=body_start + 1,
                        end_line=index,
                        strip_tabs=strip_tabs,
                        quoted=match.group(2) is not None,
                    )
                )
                end = index
        exec_form = None if heredocs else _exec_form(arguments)
        stage_index = len(stages) - 1
        if keyword == "FROM":
            stage_index = len(stages)
        instruction = Instruction(
            keyword=keyword,
            original=remainder.strip(),
            flags=flags,
            arguments=arguments,
            exec_form=exec_form,
            heredocs=tuple(heredocs),
            start_line=start,
            end_line=end,
            comments=tuple(inner_comments),
            stage=stage_index,
        )
        instructions.append(instruction)
        if keyword == "FROM":
            words = split_words(arguments)
            base = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            if not words:
                problems.append((start, "FROM without an image; name a base image or scratch"))
            platform = instruction.flag("platform")
            stages.append(Stage(stage_index, base, name, platform.value if platform else None, instruction))
        elif keyword == "ARG" and not stages:
            for word in split_words(arguments):
                key, sep, value = word.partition("=")
                global_args[key] = value if sep else None
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            problems.append((start, f"{keyword} before the first FROM; only ARG may come before FROM"))
    return Dockerfile(
        path=path,
        directives=directives,
        escape=escape,
        instructions=instructions,
        stages=stages,
        global_args=global_args,
        comments=comments,
        problems=problems,
        line_count=len(lines),
    )


def parse_file(path: Path) -> Dockerfile:
    return parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
