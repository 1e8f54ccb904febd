"""Build: one buildx build per image for all its platforms, exported as an OCI layout.

The docker driver (the one that works without pulling a BuildKit image) cannot push by digest, so the
build is exported once and `publish` pushes that same content by digest to every registry: one build, the
same index digest everywhere, and no tag in any registry until the smoke tests pass.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from python_on_whales import DockerClient, docker
from python_on_whales.exceptions import DockerException

from pipeline.config import BuildConfig, ImageConfig, LoadedConfig, RegistryConfig
from pipeline.errors import BuildError, ConfigError
from pipeline.retry import with_retries

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


def is_transient_docker_error(error: BaseException) -> bool:
    """A docker or buildx failure worth another try: the registry or the network failed, not the build."""
    if not isinstance(error, DockerException):
        return False
    text = f"{error.stderr or ''} {error.stdout or ''} {error}".lower()
    return any(
        marker in text
        for marker in (
            "500 internal server error",
            "502 bad gateway",
            "503 service unavailable",
            "connection reset",
            "connection refused",
            "i/o timeout",
            "tls handshake timeout",
            "unexpected eof",
        )
    )


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
    started = time.monotonic()
    metadata = (
        output_dir or Path(tempfile.gettempdir())
    ) / f"{spec.image.replace('/', '-')}.{os.getpid()}.metadata.json"
    if output_dir is not None:
        layout = output_dir / spec.image.replace("/", "-")
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

    def run_build() -> None:
        client.buildx.build(
            spec.context,
            file=spec.dockerfile,
            platforms=list(spec.platforms),
            build_args=spec.build_args,
            labels=spec.labels,
            target=spec.target,
            cache_from=list(spec.cache_from) or None,
            cache_to=spec.cache_to,
            provenance=spec.provenance,
            sbom=spec.sbom,
            output=output,
            tags=[load_as] if load_as else [],
            load=load_as is not None,
            metadata_file=metadata,
            progress="auto",
            builder=spec.builder,
        )

    try:
        with_retries(run_build, f"build of {spec.image}", is_transient=is_transient_docker_error)
    except DockerException as error:
        raise BuildError(f"build of {spec.image} ({spec.dockerfile}) failed: {_stderr_tail(error)}") from None
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


def _stderr_tail(error: DockerException) -> str:
    lines = [line for line in (error.stderr or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "see the build output above"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pipeline.publish import run_build_command

    parser = subparsers.add_parser(
        "build", help="build one image (all or one platform); with --push-by-digest, for native fan-out"
    )
    parser.add_argument("image", nargs="?", help="image name from the config (default: the only one)")
    parser.add_argument(
        "--platform", action="append", dest="platforms", help="build only this platform (repeatable)"
    )
    parser.add_argument(
        "--push-by-digest", action="store_true", help="push to every registry by digest, tag nothing"
    )
    parser.add_argument(
        "--digest-file", type=Path, help="write the pushed digest (JSON) here, for `pipeline merge`"
    )
    parser.add_argument("--load", action="store_true", help="load the result into the local engine")
    parser.set_defaults(handler=run_build_command)
