"""Build: one buildx build per image for all its platforms, exported as an OCI layout.

The docker driver (the one that works without pulling a BuildKit image) cannot push by digest, so the
build is exported once and `publish` pushes that same content by digest to every registry: one build, the
same index digest everywhere, and no tag in any registry until the smoke tests pass.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from pipeline.config import BuildConfig, ImageConfig, LoadedConfig, RegistryConfig
from pipeline.errors import BuildError, ConfigError
from pipeline.process import run_streaming
from pipeline.retry import TRANSIENT_DOCKER_MARKERS, with_retries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSpec:
    """Everything one build needs, resolved: no config lookups below this point."""

    image: str
    context: Path
    dockerfile: Path
    platforms: tuple[str, ...]
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    cache_from: tuple[dict[str, str], ...] = ()
    cache_to: dict[str, str] | None = None
    provenance: bool | None = None
    sbom: bool | None = None
    # `--secret` values (`id=NAME,env=VARIABLE`): secrets reach RUN --mount=type=secret, never a layer.
    secrets: tuple[str, ...] = ()
    builder: str | None = None  # the buildx builder (engine.ensure_engine picks it); None: the current one


@dataclass(frozen=True)
class BuiltImage:
    image: str
    platforms: tuple[str, ...]
    layout: Path | None
    index_digest: str
    seconds: float


def spec_for(
    config: LoadedConfig,
    image: ImageConfig,
    *,
    platforms: tuple[str, ...] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    extra_build_args: dict[str, str] | None = None,
    registries: tuple[RegistryConfig, ...] = (),
    writable_cache_registry: bool = False,
    builder: str | None = None,
) -> BuildSpec:
    context = config.context_dir(image)
    dockerfile = config.dockerfile_path(image)
    if not context.is_dir():
        raise ConfigError(f"{config.path}: images[{image.name}].context: folder {context} does not exist")
    if not dockerfile.is_file():
        raise ConfigError(f"{config.path}: images[{image.name}].dockerfile: {dockerfile} does not exist")
    cache_from, cache_to = cache_settings(
        config.pipeline.build,
        image,
        registries if writable_cache_registry else (),
        environ=os.environ,
        platforms=platforms,
    )
    return BuildSpec(
        image=image.name,
        context=context,
        dockerfile=dockerfile,
        platforms=platforms or image.platforms,
        build_args={**image.build_args, **(extra_build_args or {})},
        labels={**(labels or {}), **image.labels},
        annotations=annotations or {},
        target=image.target,
        cache_from=cache_from,
        cache_to=cache_to,
        provenance=config.pipeline.build.provenance,
        sbom=config.pipeline.build.sbom,
        secrets=tuple(f"id={key},env={variable}" for key, variable in config.pipeline.build.secrets.items()),
        builder=builder,
    )


def cache_settings(
    build: BuildConfig,
    image: ImageConfig,
    registries: tuple[RegistryConfig, ...],
    *,
    environ: Mapping[str, str],
    platforms: tuple[str, ...] | None = None,
) -> tuple[tuple[dict[str, str], ...], dict[str, str] | None]:
    """Where the build cache comes from and goes to.

    auto: GitHub's cache service on Actions; the first configured registry (`:buildcache`, mode=max) when
    there is one to write to; otherwise the engine's own build cache, which the docker driver keeps anyway.
    """
    if build.cache_from or build.cache_to:
        # Given as buildx specs: used as they are, nothing chosen on top.
        return tuple(_parse_csv(spec) for spec in build.cache_from), (
            _parse_csv(build.cache_to) if build.cache_to else None
        )
    mode = build.cache
    on_actions = environ.get("GITHUB_ACTIONS") == "true" and bool(
        environ.get("ACTIONS_CACHE_URL") or environ.get("ACTIONS_RESULTS_URL")
    )
    if mode == "auto":
        mode = "gha" if on_actions else ("registry" if registries else "none")
    scope = image.name.replace("/", "-")
    if platforms and set(platforms) != set(image.platforms):
        # Fan-out jobs build one platform each at the same time: separate caches, or they overwrite each other.
        scope += "-" + "-".join(p.replace("/", "-") for p in platforms)
    if mode == "gha":
        return ({"type": "gha", "scope": scope},), {"type": "gha", "scope": scope, "mode": "max"}
    if mode == "registry":
        if not registries:
            raise ConfigError("build.cache = 'registry' needs a configured registry to hold the cache")
        suffix = scope.removeprefix(image.name.replace("/", "-"))
        ref = f"{registries[0].repository(image.name)}:buildcache{suffix}"
        return ({"type": "registry", "ref": ref},), {"type": "registry", "ref": ref, "mode": "max"}
    if mode == "local":
        directory = (
            Path(environ.get("PIPELINE_CACHE_DIR", str(Path.home() / ".cache/image-pipeline"))) / scope
        )
        source = ({"type": "local", "src": str(directory)},) if (directory / "index.json").exists() else ()
        return source, {"type": "local", "dest": str(directory), "mode": "max"}
    if mode == "inline":
        return (), {"type": "inline"}
    return (), None


def is_transient_build_failure(error: BaseException) -> bool:
    """Like `is_transient_docker_error`, judged on buildx's own ERROR lines only: a RUN step that prints
    "connection refused" and then fails is the build's failure, not the registry's."""
    if not isinstance(error, DockerException):
        return False
    lines = (error.stderr or "").splitlines()
    errors = [line for line in lines if _BUILDX_ERROR.match(line)] or lines[-1:]
    text = "\n".join(errors).lower()
    return any(marker in text for marker in TRANSIENT_DOCKER_MARKERS)


_BUILDX_ERROR = re.compile(r"^(?:#\d+ )?ERROR:? ")
_FAILED_STEP = re.compile(r"^ > \[(?P<step>[^\]]+)\] (?P<instruction>.*?):?$")


def build_failure_cause(lines: list[str]) -> str:
    """The cause of a failed build in one line, from the end of buildx's plain progress output:
    its final `ERROR:` line and the step it failed in, e.g.
    `process "/bin/sh -c make" did not complete successfully: exit code: 2 (in [linux/arm64 2/3] RUN make)`.
    """
    stripped = [line.rstrip() for line in lines if line.strip()]
    errors = [line for line in stripped if _BUILDX_ERROR.match(line)]
    if errors:
        cause = _BUILDX_ERROR.sub("", errors[-1]).removeprefix("failed to solve: ")
    else:
        cause = stripped[-1] if stripped else "buildx exited without output"
    steps = [match for line in stripped if (match := _FAILED_STEP.match(line))]
    if steps:
        cause += f" (in [{steps[-1]['step']}] {steps[-1]['instruction']})"
    return cause[:500]


def buildx_argv(
    spec: BuildSpec,
    *,
    output: Mapping[str, str],
    load_as: str | None,
    metadata: Path,
    docker_cmd: list[str],
) -> list[str]:
    """The `docker buildx build` command line for a spec, with plain progress (it goes to a log, not a tty)."""
    argv = [*docker_cmd, "buildx", "build", "--progress", "plain", "--file", str(spec.dockerfile)]
    if spec.builder:
        argv += ["--builder", spec.builder]
    argv += ["--platform", ",".join(spec.platforms)]
    for flag, mapping in (("--build-arg", spec.build_args), ("--label", spec.labels)):
        for key, value in mapping.items():
            argv += [flag, f"{key}={value}"]
    if spec.target:
        argv += ["--target", spec.target]
    for source in spec.cache_from:
        argv += ["--cache-from", _csv(source)]
    if spec.cache_to:
        argv += ["--cache-to", _csv(spec.cache_to)]
    for flag, switch in (("--provenance", spec.provenance), ("--sbom", spec.sbom)):
        if switch is not None:
            argv.append(f"{flag}={'true' if switch else 'false'}")
    for secret in spec.secrets:
        argv += ["--secret", secret]
    if output:
        argv += ["--output", _csv(output)]
    if load_as:
        argv += ["--load", "--tag", load_as]
    argv += ["--metadata-file", str(metadata), str(spec.context)]
    return argv


def _parse_csv(spec: str) -> dict[str, str]:
    """`type=gha,scope=app` -> {"type": "gha", "scope": "app"} (buildx's own CSV syntax, quotes allowed)."""
    (row,) = csv.reader([spec])
    fields = dict(item.split("=", 1) for item in row if "=" in item)
    if "type" not in fields:
        raise ConfigError(
            f"cache spec {spec!r}: give type=... first, as buildx's --cache-from/--cache-to take"
        )
    return fields


def _csv(fields: Mapping[str, str]) -> str:
    """buildx's CSV-style option value (`type=oci,dest=...`); `_csv_field` has quoted what needs it."""
    return ",".join(f"{key}={value}" for key, value in fields.items())


class BuildxFailure(DockerException):
    """buildx exited non-zero; `stderr` holds the tail of its output and the text is the cause in one line
    (what the retry log and the error line show, rather than the whole command line)."""

    def __str__(self) -> str:
        return build_failure_cause((self.stderr or "").splitlines())


def _run_buildx(argv: list[str]) -> None:
    """Run buildx, its progress streamed to our stderr as it comes; on failure a DockerException whose
    stderr is the tail of that output, so that retries and the error line can read the cause."""
    finished = run_streaming(argv, on_stdout=_echo(sys.stdout), on_stderr=_echo(sys.stderr), env=os.environ)
    if finished.returncode != 0:
        tail = "".join(finished.stderr_tail).encode()
        raise BuildxFailure(argv, finished.returncode, stderr=tail)


def _echo(stream: IO[str]) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line)
        stream.flush()

    return write


def build(
    spec: BuildSpec,
    *,
    output_dir: Path | None = None,
    load_as: str | None = None,
    client: DockerClient = docker,
) -> BuiltImage:
    """Build all platforms once. To an OCI layout in `output_dir` (for pushing), or loaded as `load_as`."""
    if (output_dir is None) == (load_as is None):
        raise ValueError("build() needs exactly one of output_dir and load_as")
    log.info("building %s for %s", spec.image, ", ".join(spec.platforms))
    # A loaded build has no folder of its own for buildx's metadata file: a temporary one, removed after
    # (it used to be left in the temp folder, one file per run).
    with contextlib.ExitStack() as stack:
        folder = output_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeline-build-"))
        )
        return _build_into(spec, folder, output_dir is not None, load_as, client)


def _build_into(
    spec: BuildSpec, folder: Path, to_layout: bool, load_as: str | None, client: DockerClient
) -> BuiltImage:
    started = time.monotonic()
    metadata = folder / f"{spec.image.replace('/', '-')}.{os.getpid()}.metadata.json"
    if to_layout:
        layout: Path | None = folder / spec.image.replace("/", "-")
        output: dict[str, str] = {"type": "oci", "dest": str(layout), "tar": "false"}
        if "SOURCE_DATE_EPOCH" in spec.build_args:
            # File times in new layers become the commit time: the same commit gives the same image digests.
            output["rewrite-timestamp"] = "true"
        # Index annotations describe the whole multi-platform image to registries that show them.
        for key, value in spec.annotations.items():
            # buildx refuses index annotations for a single-platform export; the manifest carries them then.
            level = "annotation-index" if len(spec.platforms) > 1 else "annotation-manifest"
            output.update(_csv_field(f"{level}.{key}", value))
    else:
        layout = None
        output = {}  # --load with tags: buildx's docker exporter
    metadata.parent.mkdir(parents=True, exist_ok=True)

    argv = buildx_argv(
        spec,
        output=output,
        load_as=load_as,
        metadata=metadata,
        docker_cmd=[str(part) for part in client.client_config.docker_cmd],
    )
    try:
        with_retries(
            lambda: _run_buildx(argv), f"build of {spec.image}", is_transient=is_transient_build_failure
        )
    except BuildxFailure as error:
        raise BuildError(f"build of {spec.image} ({spec.dockerfile}) failed: {error}") from None
    digest = json.loads(metadata.read_text()).get("containerimage.digest", "")
    if not digest:
        raise BuildError(f"build of {spec.image} finished without an image digest in {metadata}")
    seconds = time.monotonic() - started
    log.info("built %s in %.1fs: %s", spec.image, seconds, digest)
    return BuiltImage(
        image=spec.image,
        platforms=spec.platforms,
        layout=layout,
        index_digest=digest,
        seconds=seconds,
    )


def _csv_field(key: str, value: str) -> dict[str, str]:
    """One `key=value` of buildx's CSV-style --output, quoted when the value holds a comma or a quote.

    python-on-whales joins `key=value` pairs with commas; buildx reads them as CSV, so a quoted field
    keeps a description such as "fast, small" in one piece.
    """
    if "," not in value and '"' not in value:
        return {key: value}
    return {f'"{key}': value.replace('"', '""') + '"'}
