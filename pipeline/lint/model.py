"""The image as the rules judge it: the parsed Dockerfile, its stage graph, and its build context.

- ARG/ENV values are expanded the way BuildKit does it, nested defaults included (`ARG BASE=alpine:${V}`),
  with BuildKit's automatic platform args (`TARGETARCH`, `BUILDPLATFORM`, ...) known in FROM lines.
- Stages form a graph: `FROM stage` makes a parent (whose platform and installed dependencies carry over),
  `COPY --from` / `RUN --mount=from=` make dependencies; only stages the target needs are built.
- The image's role: the target stage and its parents ship; the other stages are builders.
- The build context, when there is one, is read from disk (see `context`).
- The project's platforms and fan-out mode decide whether anything runs under emulation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from pipeline.dockerfile import AUTOMATIC_ARGS, Dockerfile, Instruction, Stage, expand, split_words
from pipeline.lint.context import BuildContext
from pipeline.lint.shell import Command, commands, exec_commands

_WINDOWS_BASE = re.compile(
    r"(^|/)(windows|nanoserver|windowsservercore|servercore)\b|mcr\.microsoft\.com/windows"
)
_GO_BASE = re.compile(r"(^|/)(golang|go|tinygo)(:|$)|(^|/)golang[-:]")


@dataclass(frozen=True)
class LintOptions:
    multi_platform: bool = True
    """The project builds more than one platform for this image."""
    target: str | None = None
    native: bool = False
    """Each platform is built on a runner of its own architecture (native fan-out): nothing is emulated."""
    own_images: tuple[str, ...] = ()
    """Image names this project builds itself: a FROM naming one is built earlier in the same pipeline."""

    @property
    def emulates(self) -> bool:
        return self.multi_platform and not self.native


def assignments(instruction: Instruction) -> list[tuple[str, str | None]]:
    """`ARG A=1 B`, `ENV A=1 B=2` and the legacy `ENV KEY value with spaces`, as (name, value)."""
    words = split_words(instruction.arguments)
    if instruction.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    result: list[tuple[str, str | None]] = []
    for word in words:
        key, sep, value = word.partition("=")
        result.append((key, value if sep else None))
    return result


class BuildModel:
    """One Dockerfile built for one target, with what the rules need to know about it."""

    def __init__(self, dockerfile: Dockerfile, options: LintOptions, context: BuildContext | None = None):
        self.dockerfile = dockerfile
        self.options = options
        self.context = context
        self._commands: dict[int, list[Command]] = {}

    @property
    def path(self) -> str:
        return self.dockerfile.path

    @property
    def stages(self) -> list[Stage]:
        return self.dockerfile.stages

    # ----------------------------------------------------------------------------------------------------
    # Variables
    # ----------------------------------------------------------------------------------------------------

    @cached_property
    def global_args(self) -> dict[str, str | None]:
        """ARGs before the first FROM with nested defaults expanded, plus BuildKit's automatic args."""
        values: dict[str, str | None] = dict(AUTOMATIC_ARGS)
        for key, value in self.dockerfile.global_args.items():
            if value is None and key in AUTOMATIC_ARGS:
                continue
            values[key] = expand(value, values) if value is not None else None
        return values

    def resolve_base(self, stage: Stage) -> str:
        return self.dockerfile.resolve_base(stage)

    def stage_variables(self, stage: Stage, before: Instruction | None = None) -> dict[str, str | None]:
        """ARG and ENV values visible in a stage (and inherited ENV from its parents), up to `before`."""
        parent = self.parent(stage)
        values: dict[str, str | None] = (
            {k: v for k, v in self.stage_variables(parent).items()} if parent is not None else {}
        )
        for instruction in stage.instructions:
            if before is not None and instruction is before:
                break
            if instruction.keyword == "ARG":
                for key, value in assignments(instruction):
                    default = self.global_args.get(key) if value is None else expand(value, values)
                    values[key] = default
            elif instruction.keyword == "ENV":
                for key, value in assignments(instruction):
                    values[key] = expand(value or "", values)
        return values

    def declared_args(self, stage: Stage) -> set[str]:
        """ARG names declared inside the stage (automatic args need this to be visible to RUN)."""
        return {key for i in stage.instructions if i.keyword == "ARG" for key, _ in assignments(i)}

    # ----------------------------------------------------------------------------------------------------
    # The stage graph
    # ----------------------------------------------------------------------------------------------------

    def parent(self, stage: Stage) -> Stage | None:
        """The earlier stage this one builds FROM, if any."""
        found = self.dockerfile.stage_by_name(self.resolve_base(stage))
        return found if found is not None and found.index < stage.index else None

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage, then its parent, grandparent... (what its filesystem is built on)."""
        result: list[Stage] = []
        current: Stage | None = stage
        while current is not None and current not in result:
            result.append(current)
            current = self.parent(current)
        return result

    def dependencies(self, stage: Stage) -> set[int]:
        """Indexes of the stages this one needs: its parent and every `--from` it names."""
        needed: set[int] = set()
        parent = self.parent(stage)
        if parent is not None:
            needed.add(parent.index)
        for instruction in stage.instructions:
            names = [f.value for f in instruction.flag_all("from") if f.value]
            names += [m["from"] for m in instruction.mounts() if m.get("from")]
            for name in names:
                found = self.dockerfile.stage_by_name(expand(name, self.global_args))
                if found is not None and found.index < stage.index:
                    needed.add(found.index)
        return needed

    def from_image(self, name: str) -> str:
        """The image a `--from=` name stands for: a stage's root base image, or the image reference itself."""
        found = self.dockerfile.stage_by_name(expand(name, self.global_args))
        return (
            self.resolve_base(self.chain(found)[-1]) if found is not None else expand(name, self.global_args)
        )

    @cached_property
    def target_stage(self) -> Stage | None:
        return self.dockerfile.stage_of(self.options.target)

    @cached_property
    def built(self) -> list[Stage]:
        """The stages BuildKit builds for the target (the others are skipped)."""
        if self.target_stage is None:
            return []
        wanted = {self.target_stage.index}
        pending = [self.target_stage.index]
        while pending:
            for index in self.dependencies(self.stages[pending.pop()]):
                if index not in wanted:
                    wanted.add(index)
                    pending.append(index)
        return [s for s in self.stages if s.index in wanted]

    @cached_property
    def shipped(self) -> list[Stage]:
        """The target stage and the stages it is built FROM: what ends up in the image's layers."""
        return self.chain(self.target_stage) if self.target_stage is not None else []

    def platform(self, stage: Stage) -> str | None:
        """The stage's --platform, inherited from its parent stage when it names none."""
        for link in self.chain(stage):
            if link.platform:
                return link.platform
        return None

    def on_build_platform(self, stage: Stage) -> bool:
        platform = self.platform(stage)
        return platform is not None and "BUILDPLATFORM" in platform

    def is_windows(self, stage: Stage) -> bool:
        root = self.chain(stage)[-1]
        if _WINDOWS_BASE.search(self.resolve_base(root).lower()):
            return True
        return any(
            i.keyword == "SHELL" and re.search(r"powershell|pwsh|cmd", i.arguments, re.IGNORECASE)
            for s in self.chain(stage)
            for i in s.instructions
        )

    def is_go_stage(self, stage: Stage) -> bool:
        """A Go toolchain is there: a golang base image, or GOROOT/GOPATH set up by the Dockerfile."""
        root = self.chain(stage)[-1]
        if _GO_BASE.search(self.resolve_base(root).lower()):
            return True
        variables = self.stage_variables(stage)
        return "GOROOT" in variables or "GOPATH" in variables

    # ----------------------------------------------------------------------------------------------------
    # Commands
    # ----------------------------------------------------------------------------------------------------

    def commands(self, instruction: Instruction) -> list[Command]:
        """The simple commands a RUN executes (heredoc bodies included)."""
        key = id(instruction)
        if key not in self._commands:
            found: list[Command] = []
            if instruction.exec_form is not None:
                found = exec_commands(instruction.exec_form)
            elif instruction.heredocs and instruction.arguments.lstrip().startswith("<<"):
                for heredoc in instruction.heredocs:
                    found += commands(heredoc.body)
            else:
                found = commands(instruction.arguments)
                # `RUN python3 <<EOF` feeds the body to a program; `RUN sh <<EOF` to a shell.
                if instruction.heredocs and found and found[0].name in ("sh", "bash", "ash", "dash"):
                    for heredoc in instruction.heredocs:
                        found += commands(heredoc.body)
            self._commands[key] = found
        return self._commands[key]

    def runs(self, stage: Stage) -> list[Instruction]:
        return [i for i in stage.instructions if i.keyword == "RUN"]

    def has_mount(self, instruction: Instruction, kinds: tuple[str, ...], hints: tuple[str, ...]) -> bool:
        """A cache/tmpfs (per `kinds`) mount whose target contains one of the hints."""
        for mount in instruction.mounts():
            if mount.get("type") not in kinds:
                continue
            target = mount.get("target") or mount.get("dst") or mount.get("destination") or ""
            if not hints or any(hint in target for hint in hints):
                return True
        return False
