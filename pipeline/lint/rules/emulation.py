"""PL50x multi-platform builds: compiles run under QEMU, or run natively but build for the wrong target.

Nothing is emulated when the project builds one platform or builds each platform on a runner of its own
architecture. Only stages the target needs count, and only builder stages: a compile in the stage that ships
produces what ships, for its own platform, and moving it to $BUILDPLATFORM is not a fix. Only compilers
whose output can be built for another platform from the build machine (Go, Rust, JS bundles, JVM, .NET,
static sites) are reported; `pip wheel`, gcc or make of C code must run for the target.
"""

from __future__ import annotations

import re

from pipeline.dockerfile import AUTOMATIC_ARGS, Instruction, Stage
from pipeline.lint.commands import compile_step
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel

EMULATED_COMPILE = Rule(
    "PL501",
    "warning",
    "compile step runs under emulation",
    "FROM --platform=$BUILDPLATFORM for the build stage, cross-compile with TARGETOS/TARGETARCH",
)
WRONG_TARGET = Rule(
    "PL502",
    "error",
    "native compile on the build platform ignores the target",
    "declare ARG TARGETOS TARGETARCH in the stage and pass them to the compiler",
)
RULES = (EMULATED_COMPILE, WRONG_TARGET)

# tonistiigi/xx's golang image puts a `go` wrapper on PATH that builds for $TARGETPLATFORM.
_XX_GOLANG = re.compile(r"(^|/)xx:golang\b")
_TARGET_REFERENCE = re.compile(r"\$\{?(TARGET(?:PLATFORM|OS|ARCH|VARIANT))\b")
# Ways to name the target without BuildKit's args: xx helpers, --target, or GOOS/GOARCH/CC set explicitly.
_TARGET_AWARE = re.compile(
    r"\bxx-(?:go|cargo|clang|apk|apt|info)|--target\b|\b(?:GOOS|GOARCH|CARGO_BUILD_TARGET|CC|TARGET)\s*=|"
    r"\bTARGET(?:PLATFORM|OS|ARCH|VARIANT)\b"
)


def check(model: BuildModel) -> list[Finding]:
    findings: list[Finding] = []
    shipped = {stage.index for stage in model.shipped}
    for stage in model.built:
        if model.is_windows(stage):
            continue
        go = model.is_go_stage(stage)
        if model.on_build_platform(stage):
            if model.options.emulates:  # one platform, or each built natively: build and target agree
                findings += _wrong_target(model, stage, go)
        elif model.options.emulates and stage.index not in shipped:
            findings += _emulated(model, stage, go)
    return findings


def _compiles(model: BuildModel, instruction: Instruction, go: bool) -> list[tuple[str, bool, bool]]:
    return [step for c in model.commands(instruction) if (step := compile_step(c, go)) is not None]


def _emulated(model: BuildModel, stage: Stage, go: bool) -> list[Finding]:
    findings: list[Finding] = []
    for instruction in model.runs(stage):
        portable = [what for what, cross, _ in _compiles(model, instruction, go) if cross]
        if portable:
            findings.append(
                EMULATED_COMPILE.at(
                    model.path,
                    instruction.start_line,
                    f"`{portable[0]}` in {stage.label} runs under QEMU emulation for every non-native platform "
                    f"(often 10x slower); use FROM --platform=$BUILDPLATFORM at line "
                    f"{stage.from_instruction.start_line} and cross-compile for TARGETOS/TARGETARCH",
                    instruction.end_line,
                )
            )
    return findings


def _go_wrapped_by_xx(model: BuildModel, stage: Stage) -> bool:
    """`go` itself cross-compiles: tonistiigi/xx's golang image copied in, or `xx-go --wrap` run earlier."""
    for link in model.chain(stage):
        for instruction in link.instructions:
            if instruction.keyword == "RUN" and any(
                c.name == "xx-go" and c.option("--wrap") for c in model.commands(instruction)
            ):
                return True
            copied = instruction.flag_all("from") if instruction.keyword == "COPY" else ()
            if any(_XX_GOLANG.search(model.from_image(flag.value or "")) for flag in copied):
                return True
    return False


def _wrong_target(model: BuildModel, stage: Stage, go: bool) -> list[Finding]:
    findings: list[Finding] = []
    declared: set[str] = set()
    for link in model.chain(stage):
        declared |= model.declared_args(link)
    setup = "\n".join(
        i.arguments for link in model.chain(stage) for i in link.instructions if i.keyword == "ENV"
    )
    # The wrapped `go` reads TARGETPLATFORM from the environment, where a declared ARG puts it.
    if go and declared & {"TARGETPLATFORM", "TARGETOS", "TARGETARCH"} and _go_wrapped_by_xx(model, stage):
        return findings
    for instruction in model.runs(stage):
        native = [what for what, _, arch_bound in _compiles(model, instruction, go) if arch_bound]
        if not native:
            continue
        text = instruction.command_text
        undeclared = sorted(
            {name for name in _TARGET_REFERENCE.findall(text + "\n" + setup) if name in AUTOMATIC_ARGS}
            - declared
        )
        if undeclared:
            findings.append(
                WRONG_TARGET.at(
                    model.path,
                    instruction.start_line,
                    f"`{native[0]}` uses ${undeclared[0]}, but {stage.label} never declares ARG {undeclared[0]}, so "
                    f"it is empty and every platform gets a binary for the build machine; add ARG "
                    f"{' '.join(undeclared)} in the stage",
                    instruction.end_line,
                )
            )
        elif not _TARGET_AWARE.search(text + "\n" + setup):
            findings.append(
                WRONG_TARGET.at(
                    model.path,
                    instruction.start_line,
                    f"`{native[0]}` runs on $BUILDPLATFORM in {stage.label} but never mentions TARGETOS/TARGETARCH, "
                    "so every platform gets a binary for the build machine; add ARG TARGETOS TARGETARCH and pass "
                    "them (e.g. GOOS=$TARGETOS GOARCH=$TARGETARCH)",
                    instruction.end_line,
                )
            )
    return findings
