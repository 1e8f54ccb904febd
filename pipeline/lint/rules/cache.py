"""PL1xx layer-cache order: steps that re-run on every source change because they come after the sources."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.dockerfile import Instruction, Stage
from pipeline.lint.commands import CACHE_DIRS, MANIFESTS, Install, dependency_install, os_install
from pipeline.lint.copies import classify_copy, context_sources, describe, manifest_ecosystems
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel, assignments

DEPENDENCIES_AFTER_SOURCES = Rule(
    "PL101",
    "error",
    "dependency install after copying the sources",
    "copy only the dependency manifests, install, then copy the rest",
)
OS_PACKAGES_AFTER_SOURCES = Rule(
    "PL102",
    "error",
    "OS package install after copying the sources",
    "install OS packages before any COPY of the build context",
)
SCRIPT_AFTER_SOURCES = Rule(
    "PL103",
    "warning",
    "step needs one file but runs after copying everything",
    "copy that file first, run the step, then copy the rest",
)
PER_BUILD_ARG_EARLY = Rule(
    "PL104",
    "info",
    "per-build ARG declared before the steps it does not feed",
    "declare version/commit/date ARGs after the expensive RUN steps, just before they are used",
)
RULES = (DEPENDENCIES_AFTER_SOURCES, OS_PACKAGES_AFTER_SOURCES, SCRIPT_AFTER_SOURCES, PER_BUILD_ARG_EARLY)

_SCRIPT = re.compile(r"^\.{0,2}/?(?:[\w.-]+/)*[\w.-]+\.(?:sh|py|js|mjs|rb|pl)$")
_INTERPRETERS = frozenset({"sh", "bash", "python", "python3", "node", "ruby", "perl"})
_BUILD_METADATA_ARG = re.compile(
    r"^(?:[A-Z_]*_)?(?:VERSION|GIT_SHA|GIT_COMMIT|COMMIT(?:_SHA)?|REVISION|VCS_REF|BUILD_DATE|CREATED|"
    r"BUILD_NUMBER|BUILD_ID)$",
    re.IGNORECASE,
)
# Commands that may read a build arg from their environment without naming it.
_READS_ENVIRONMENT = frozenset({"make", "env", "printenv", "goreleaser", "envsubst"})


def check(model: BuildModel) -> list[Finding]:
    findings: list[Finding] = []
    for stage in model.built:
        findings += _cache_order(model, stage)
        findings += _per_build_args(model, stage)
    return findings


def _installed_by_parents(model: BuildModel, stage: Stage) -> set[str]:
    """Ecosystems whose dependencies a parent stage already installed from a manifest."""
    done: set[str] = set()
    for parent in model.chain(stage)[1:]:
        go = model.is_go_stage(parent)
        for instruction in model.runs(parent):
            for command in model.commands(instruction):
                found = dependency_install(command, go)
                if found is not None and found.kind in ("manifest", "implicit"):
                    done.add(found.ecosystem)
    return done


@dataclass
class _StageOrder:
    """Walks one stage in order, tracking what the cache order depends on."""

    model: BuildModel
    stage: Stage
    installed: set[str]
    """Ecosystems whose dependencies were installed from their manifest before the sources came in."""
    sources: Instruction | None = None
    """The first COPY/ADD that brought in source code."""
    candidate: Instruction | None = None
    """A folder copied after a manifest: a helper if the next install reads it, else the sources."""
    manifests: set[str] = field(default_factory=set)
    vendored: bool = False
    findings: list[Finding] = field(default_factory=list)

    def copy(self, instruction: Instruction) -> None:
        kind = classify_copy(self.model, instruction, self.manifests) if self.sources is None else None
        if kind == "sources":
            self.sources = instruction
        elif kind == "maybe-helper" and self.candidate is None:
            self.candidate = instruction
        self.manifests |= manifest_ecosystems(instruction)
        self.vendored = self.vendored or any(
            s.rstrip("/").endswith("vendor") for s in context_sources(instruction)
        )

    def run(self, instruction: Instruction, last: bool) -> None:
        go = self.model.is_go_stage(self.stage)
        commands = self.model.commands(instruction)
        installs = [found for c in commands if (found := dependency_install(c, go)) is not None]
        self._settle_candidate(installs)
        if self.sources is not None and any(os_install(c) for c in commands):
            self.findings.append(_os_packages_after(self.model, instruction, self.sources))
        reported: set[str] = set()
        for found in installs:
            sources = self.sources
            if self._is_fault(instruction, found, reported) and sources is not None:
                reported.add(found.ecosystem)
                self.findings.append(
                    _dependencies_after(self.model, instruction, sources, found.ecosystem, found.kind)
                )
        self.installed |= reported
        if self.sources is not None and not installs and not last:
            script = _script_used(self.model, instruction)
            if script is not None:
                self.findings.append(_script_after(self.model, instruction, self.sources, script))

    def _settle_candidate(self, installs: list[Install]) -> None:
        if self.candidate is None or not installs:
            return
        # A Go `replace` folder or a Cargo workspace member is needed by the install from the manifest (for
        # Cargo, also by the dummy build that caches dependencies); a build instead needs the sources.
        helper = any(
            f.kind == "manifest" or (f.ecosystem == "cargo" and f.kind == "implicit") for f in installs
        )
        if self.sources is None and not helper:
            self.sources = self.candidate
        self.candidate = None

    def _is_fault(self, instruction: Instruction, found: Install, reported: set[str]) -> bool:
        """Whether this install re-runs on every source change when it need not."""
        if found.kind == "tool":
            return False
        if self.sources is None:
            if found.kind in ("manifest", "implicit"):
                self.installed.add(found.ecosystem)
                self.manifests = set()
            return False
        if found.ecosystem in self.installed or found.ecosystem in reported:
            return False
        cached = self.model.has_mount(instruction, ("cache",), CACHE_DIRS.get(found.ecosystem, ()))
        return not (found.kind == "implicit" and (cached or (found.ecosystem == "go" and self.vendored)))


def _cache_order(model: BuildModel, stage: Stage) -> list[Finding]:
    order = _StageOrder(model, stage, _installed_by_parents(model, stage))
    runs = model.runs(stage)
    for instruction in stage.instructions:
        if instruction.keyword in ("COPY", "ADD"):
            order.copy(instruction)
        elif instruction.keyword == "RUN":
            order.run(instruction, last=instruction is runs[-1])
    return order.findings


def _os_packages_after(model: BuildModel, instruction: Instruction, sources: Instruction) -> Finding:
    return OS_PACKAGES_AFTER_SOURCES.at(
        model.path,
        instruction.start_line,
        f"OS packages are installed after {describe(sources)}, so every source change reinstalls them; move this "
        "RUN above that COPY",
        instruction.end_line,
    )


def _script_after(model: BuildModel, instruction: Instruction, sources: Instruction, script: str) -> Finding:
    return SCRIPT_AFTER_SOURCES.at(
        model.path,
        instruction.start_line,
        f"this step uses {script} but runs after {describe(sources)}, so it re-runs on every source change; COPY "
        "that file first, run the step, then copy the rest",
        instruction.end_line,
    )


def _dependencies_after(
    model: BuildModel, instruction: Instruction, sources: Instruction, ecosystem: str, kind: str
) -> Finding:
    line = instruction.start_line
    if kind == "packages":
        return DEPENDENCIES_AFTER_SOURCES.at(
            model.path,
            line,
            f"{ecosystem} installs packages after {describe(sources)}, so any source change re-runs it; move "
            "this RUN above that COPY",
            instruction.end_line,
        )
    what = "installs" if kind == "manifest" else "downloads as it builds"
    return DEPENDENCIES_AFTER_SOURCES.at(
        model.path,
        line,
        f"{ecosystem} {what} dependencies after {describe(sources)}, so any source change re-runs it; COPY only "
        f"the {ecosystem} manifests (e.g. {MANIFESTS.get(ecosystem, 'the lock file')}), install, then COPY "
        "the rest",
        instruction.end_line,
        # Building may fetch nothing (vendored modules): the linter cannot see that, so it is not sure.
        severity="error" if kind == "manifest" else "warning",
    )


def _script_used(model: BuildModel, instruction: Instruction) -> str | None:
    for command in model.commands(instruction):
        candidates = [command.name]
        if command.name in _INTERPRETERS:
            candidates += command.positionals()[:1]
        for word in candidates:
            if _SCRIPT.match(word) and not word.startswith(("/usr/", "/bin/", "/etc/")):
                return word
    return None


def _pinned(value: str | None) -> bool:
    """A default that names a fixed version (`1.10`, `v2.3.0`) rather than a per-build value."""
    return value is not None and bool(re.search(r"\d", value)) and "$" not in value


def _per_build_args(model: BuildModel, stage: Stage) -> list[Finding]:
    findings: list[Finding] = []
    for position, instruction in enumerate(stage.instructions):
        if instruction.keyword != "ARG":
            continue
        for name, value in assignments(instruction):
            if not _BUILD_METADATA_ARG.match(name) or _pinned(value):
                continue
            reference = re.compile(rf"\${{?{re.escape(name)}\b")
            unrelated: list[Instruction] = []
            for later in stage.instructions[position + 1 :]:
                text = later.command_text if later.keyword == "RUN" else later.arguments
                # A RUN that uses it needs it declared; an ENV derived from it busts the same steps itself.
                if later.keyword in ("RUN", "ENV") and reference.search(text):
                    break
                if later.keyword != "RUN":
                    continue
                if any(c.name in _READS_ENVIRONMENT or _SCRIPT.match(c.name) for c in model.commands(later)):
                    break
                unrelated.append(later)
            if unrelated:
                findings.append(
                    PER_BUILD_ARG_EARLY.at(
                        model.path,
                        instruction.start_line,
                        f"ARG {name} changes on every release and every RUN after it (first: line "
                        f"{unrelated[0].start_line}) misses the cache when it does; declare it after those RUN "
                        "steps, just before the LABEL or step that uses it",
                    )
                )
    return findings
