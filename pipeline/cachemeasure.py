"""`pipeline lint --measure-cache IMAGE`: how much of an image a one-line source change rebuilds.

Builds a temporary copy of the context cold (`--no-cache`), appends one line to an application source file in
that copy, rebuilds with the cache, and reads buildx's plain progress to say which steps were CACHED and which
ran again. The user's tree is never touched; the builds export to the cache only, so no image is left behind.
"""

from __future__ import annotations

import json
import platform as host_platform
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from python_on_whales import docker
from python_on_whales.exceptions import DockerException

from pipeline.config import LoadedConfig
from pipeline.dockerfile import Dockerfile, is_broad_source, parse_file
from pipeline.errors import BuildError, LintError

_VERTEX = re.compile(r"^#(\d+) (.*)$")
_STEP_NAME = re.compile(r"^\[(?:(?P<stage>[^\]]+?) )?(?P<index>\d+)/(?P<total>\d+)\] (?P<text>.*)$")
_DONE = re.compile(r"^DONE (\d+(?:\.\d+)?)s$")
# Files that describe dependencies or the build rather than the application: changing one of them is a
# different measurement (it is expected to rebuild the install step).
_NOT_SOURCES = re.compile(
    r"(^|/)(Dockerfile|[\w.-]*\.Dockerfile|\.dockerignore|requirements[\w.-]*\.txt|pyproject\.toml|poetry\.lock|"
    r"uv\.lock|Pipfile(\.lock)?|package(-lock)?\.json|yarn\.lock|pnpm-lock\.yaml|go\.(mod|sum)|Cargo\.(toml|lock)|"
    r"Gemfile(\.lock)?|pom\.xml|build\.gradle(\.kts)?|settings\.gradle(\.kts)?|composer\.(json|lock)|smoke\.yaml)$"
)
_COMMENT_STYLE = {
    ".py": "# {}",
    ".sh": "# {}",
    ".rb": "# {}",
    ".yaml": "# {}",
    ".yml": "# {}",
    ".toml": "# {}",
    ".conf": "# {}",
    ".txt": "{}",
    ".md": "{}",
    ".js": "// {}",
    ".mjs": "// {}",
    ".ts": "// {}",
    ".go": "// {}",
    ".rs": "// {}",
    ".java": "// {}",
    ".c": "/* {} */",
    ".css": "/* {} */",
    ".html": "<!-- {} -->",
    ".htm": "<!-- {} -->",
    ".svg": "<!-- {} -->",
    ".xml": "<!-- {} -->",
}


@dataclass(frozen=True)
class Step:
    vertex: int
    stage: str
    index: int
    total: int
    text: str
    cached: bool
    seconds: float | None

    @property
    def keyword(self) -> str:
        return self.text.split(" ", 1)[0].upper()


@dataclass(frozen=True)
class BuildRun:
    seconds: float
    steps: list[Step]


@dataclass(frozen=True)
class Measurement:
    image: str
    platform: str
    changed_file: str
    cold: BuildRun
    rebuild: BuildRun
    reused: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    reused_before_source_copy: bool = False
    """Each stage's first re-run step is a COPY/ADD: the cache broke where the change came in."""

    @property
    def ratio(self) -> float:
        return self.rebuild.seconds / self.cold.seconds if self.cold.seconds > 0 else 0.0


def _label(step: Step) -> str:
    return f"[{step.stage + ' ' if step.stage else ''}{step.index}/{step.total}] {step.text}"


def parse_progress(lines: Iterable[str]) -> list[Step]:
    """Dockerfile steps from `--progress plain` output, in stage order; `[internal]` vertices are skipped."""
    names: dict[int, tuple[str, int, int, str]] = {}
    cached: set[int] = set()
    seconds: dict[int, float] = {}
    for raw in lines:
        match = _VERTEX.match(raw.rstrip("\n"))
        if match is None:
            continue
        vertex, rest = int(match.group(1)), match.group(2).strip()
        step = _STEP_NAME.match(rest)
        if step is not None and vertex not in names:
            names[vertex] = (
                step.group("stage") or "",
                int(step.group("index")),
                int(step.group("total")),
                step.group("text"),
            )
        elif rest == "CACHED":
            cached.add(vertex)
        elif (done := _DONE.match(rest)) is not None:
            seconds[vertex] = float(done.group(1))
    steps = [
        Step(vertex, stage, index, total, text, vertex in cached, seconds.get(vertex))
        for vertex, (stage, index, total, text) in names.items()
    ]
    return sorted(steps, key=lambda s: (s.stage, s.index))


def _context_sources(dockerfile: Dockerfile) -> list[str]:
    """Context paths copied by COPY/ADD, the last copy first: the application sources come late."""
    sources: list[str] = []
    for instruction in reversed(dockerfile.instructions):
        if (
            instruction.keyword in ("COPY", "ADD")
            and instruction.flag("from") is None
            and not instruction.heredocs
        ):
            words = instruction.words()
            sources += words[:-1]
    # A source tree (`.`, `src/`, `site/`) is where edits happen; single files are mostly configuration.
    return sorted(sources, key=lambda source: not is_broad_source(source))


def choose_source_file(dockerfile: Dockerfile, context: Path) -> str:
    """A text file the last context COPY brings in that is application code, not a manifest."""
    for source in _context_sources(dockerfile):
        root = (context / source.lstrip("/")).resolve()
        candidates: Iterator[Path]
        if root.is_file():
            candidates = iter([root])
        elif root.is_dir():
            candidates = (p for p in sorted(root.rglob("*")) if p.is_file())
        else:
            candidates = (p for p in sorted(context.glob(source.lstrip("/"))) if p.is_file())
        for candidate in candidates:
            relative = candidate.relative_to(context.resolve()).as_posix()
            if ".git/" in relative or _NOT_SOURCES.search(relative):
                continue
            if candidate.suffix in _COMMENT_STYLE:
                return relative
    raise LintError(
        f"{dockerfile.path}: found no application source file copied from the context; pass --change FILE"
    )


def change_file(path: Path, note: str | None = None) -> None:
    """Append one line in the file's own comment syntax, so the change is a realistic one-line edit.

    The line is unique per call: a repeated probe with the same text would find its own earlier result in
    BuildKit's cache and report everything as reused.
    """
    note = note or f"cache probe {uuid.uuid4().hex[:12]}"
    style = _COMMENT_STYLE.get(path.suffix, "{}")
    text = path.read_text()
    path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + style.format(note) + "\n")


def native_platform() -> str:
    machine = host_platform.machine().lower()
    return "linux/arm64" if machine in ("aarch64", "arm64") else "linux/amd64"


def timed_build(
    context: Path,
    dockerfile: Path,
    *,
    no_cache: bool,
    platform: str,
    build_args: dict[str, str] | None = None,
    target: str | None = None,
) -> BuildRun:
    lines: list[str] = []
    started = time.perf_counter()
    try:
        stream = docker.buildx.build(
            context,
            file=dockerfile,
            platforms=[platform],
            build_args=build_args or {},
            target=target,
            cache=not no_cache,
            progress="plain",
            output={"type": "cacheonly"},
            stream_logs=True,
        )
        assert stream is not None and not isinstance(stream, str) and hasattr(stream, "__iter__")
        for line in stream:
            lines.append(str(line))
    except DockerException as error:
        detail = (error.stderr or "").strip().splitlines() or [line.strip() for line in lines[-3:]]
        raise BuildError(
            f"{dockerfile}: build for --measure-cache failed: {detail[-1] if detail else error}; "
            "fix the build (pipeline build) first"
        ) from None
    return BuildRun(time.perf_counter() - started, parse_progress(lines))


def _first_reruns_are_copies(steps: list[Step]) -> bool:
    by_stage: dict[str, list[Step]] = {}
    for step in steps:
        by_stage.setdefault(step.stage, []).append(step)
    for stage_steps in by_stage.values():
        rerun = [s for s in stage_steps if not s.cached and s.keyword != "FROM"]
        if rerun and rerun[0].keyword not in ("COPY", "ADD"):
            return False
    return True


def measure(
    context: Path,
    dockerfile: Path,
    *,
    image: str,
    change: str | None = None,
    build_args: dict[str, str] | None = None,
    target: str | None = None,
    platform: str | None = None,
) -> Measurement:
    platform = platform or native_platform()
    with tempfile.TemporaryDirectory(prefix="pipeline-cache-") as scratch:
        copy = Path(scratch) / "context"
        shutil.copytree(context, copy, ignore=shutil.ignore_patterns(".git"), symlinks=True)
        # A Dockerfile outside its context is copied beside it, so the probe never reads the user's tree.
        inside = dockerfile.resolve().is_relative_to(context.resolve())
        probe_dockerfile = (
            copy / dockerfile.resolve().relative_to(context.resolve())
            if inside
            else Path(scratch) / dockerfile.name
        )
        if not inside:
            shutil.copy2(dockerfile, probe_dockerfile)
        parsed = parse_file(probe_dockerfile)
        changed = change or choose_source_file(parsed, copy)
        target_file = copy / changed
        if not target_file.is_file():
            raise LintError(
                f"{changed}: not a file in the context {context}; pass --change with a context path"
            )
        cold = timed_build(
            copy, probe_dockerfile, no_cache=True, platform=platform, build_args=build_args, target=target
        )
        change_file(target_file)
        rebuild = timed_build(
            copy, probe_dockerfile, no_cache=False, platform=platform, build_args=build_args, target=target
        )
    return Measurement(
        image=image,
        platform=platform,
        changed_file=changed,
        cold=cold,
        rebuild=rebuild,
        reused=[_label(s) for s in rebuild.steps if s.cached],
        rerun=[_label(s) for s in rebuild.steps if not s.cached and s.keyword != "FROM"],
        reused_before_source_copy=_first_reruns_are_copies(rebuild.steps),
    )


def measure_image(config: LoadedConfig, name: str, change: str | None = None) -> Measurement:
    image = config.image(name)
    context = config.context_dir(image)
    dockerfile = config.dockerfile_path(image)
    if not dockerfile.is_file():
        raise LintError(
            f"{dockerfile}: no such Dockerfile for image {image.name}; fix its dockerfile in the config"
        )
    return measure(
        context,
        dockerfile,
        image=image.name,
        change=change,
        build_args=dict(image.build_args),
        target=image.target,
    )


def render_measurement(measurement: Measurement, output_format: str) -> str:
    if output_format in ("json", "sarif"):
        document = asdict(measurement)
        document["ratio"] = measurement.ratio
        return json.dumps(document, indent=2) + "\n"
    lines = [
        f"{measurement.image} ({measurement.platform}): changed {measurement.changed_file}",
        f"  cold build {measurement.cold.seconds:.2f}s, rebuild {measurement.rebuild.seconds:.2f}s, "
        f"ratio {measurement.ratio:.3f}",
    ]
    lines += [f"  CACHED  {step}" for step in measurement.reused]
    lines += [f"  re-ran  {step}" for step in measurement.rerun]
    verdict = (
        "every step before the source copy was reused"
        if measurement.reused_before_source_copy
        else "a step before the source copy re-ran: the cache broke too early (see pipeline lint PL1xx)"
    )
    lines.append(f"  {verdict}")
    return "\n".join(lines) + "\n"
