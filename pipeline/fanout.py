"""`pipeline build` and `pipeline merge`: the native fan-out, one runner per platform.

`build --platform P --push-by-digest` builds one platform with the release's own spec (labels, annotations,
SOURCE_DATE_EPOCH from the plan) and pushes it by digest; `merge` joins the platforms into one index with
the image's annotations. `release --digest` then tests and tags that index. These commands sit above
build, publish, engine and release, so that none of those imports another back.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pipeline.build import build
from pipeline.config import LoadedConfig, load_config
from pipeline.dockerconfig import isolated_docker_config
from pipeline.engine import ensure_engine, offline_base_in_use, stand_in_bases, stand_in_refusal
from pipeline.errors import ConfigError, PipelineError
from pipeline.plan import make_plan
from pipeline.publish import login_all, merge_platform_digests, push_everywhere
from pipeline.registry import ensure_registries, planned_registries
from pipeline.release import release_spec


def _single_image(config: LoadedConfig, name: str | None) -> str:
    if name is not None:
        return config.image(name).name
    if len(config.pipeline.images) != 1:
        raise ConfigError(f"{config.path}: several images are declared; name the one to build")
    return config.pipeline.images[0].name


def run_build_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    image = config.image(_single_image(config, args.image))
    platforms = tuple(args.platforms) if args.platforms else image.platforms
    unknown = [p for p in platforms if p not in image.platforms]
    if unknown:
        raise ConfigError(
            f"--platform {unknown[0]}: image {image.name} declares only {', '.join(image.platforms)}"
        )
    # The release's own plan: the same labels, annotations and SOURCE_DATE_EPOCH as a single-job release.
    plan = make_plan(
        config,
        registries=planned_registries(config),
        allow_dirty=args.allow_dirty or not args.push_by_digest,
    )
    image_plan = plan.image(image.name)
    release_spec(config, plan, image_plan, (), stand_in=False, platforms=platforms)  # context, Dockerfile
    engine = ensure_engine(builder=config.pipeline.build.builder, platforms=platforms)
    stand_in = offline_base_in_use(engine)
    if not args.push_by_digest:
        spec = release_spec(
            config, plan, image_plan, (), stand_in=stand_in, platforms=platforms, builder=engine.builder
        )
        with tempfile.TemporaryDirectory(prefix="pipeline-build-") as scratch:
            built = build(
                spec,
                load_as=f"{image.name}:dev" if args.load else None,
                output_dir=None if args.load else Path(scratch),
            )
        print(json.dumps({"image": image.name, "digest": built.index_digest, "platforms": list(platforms)}))
        return 0
    registries = ensure_registries(config)
    if stand_in:  # a fan-out push publishes as surely as a release: same refusal
        refusal = stand_in_refusal(
            image.name,
            stand_in_bases(config.dockerfile_path(image), image.build_args),
            {registry.name: registry.host for registry in registries},
        )
        if refusal is not None:
            raise PipelineError(refusal)
    spec = release_spec(
        config, plan, image_plan, registries, stand_in=stand_in, platforms=platforms, builder=engine.builder
    )
    with isolated_docker_config(), tempfile.TemporaryDirectory(prefix="pipeline-build-") as scratch:
        login_all(registries)
        built = build(spec, output_dir=Path(scratch))
        published = push_everywhere(built, registries)
    # A single-platform build exported as OCI is still an index of one; the merge wants the manifest itself.
    result = {
        "image": image.name,
        "index_digest": published.index_digest,
        "platforms": published.platform_digests,
        "registries": [push.reference for push in published.pushes],
    }
    if args.digest_file:
        args.digest_file.parent.mkdir(parents=True, exist_ok=True)
        args.digest_file.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


def run_merge_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    image = config.image(_single_image(config, args.image))
    registries = ensure_registries(config)
    digests: list[str] = []
    for path in args.digest_files:
        try:
            recorded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{path}: not a digest file written by `pipeline build --digest-file` ({error})"
            ) from None
        if not isinstance(recorded, dict) or not isinstance(recorded.get("platforms"), dict):
            raise ConfigError(
                f"{path}: has no `platforms` object; give the file `pipeline build --digest-file` wrote"
            )
        if recorded.get("image") != image.name:
            raise ConfigError(f"{path}: holds image {recorded.get('image')!r}, not {image.name!r}")
        digests.extend(str(digest) for digest in recorded["platforms"].values())
    # The index carries the image's annotations, as the index of a single-job multi-platform build does.
    annotations = make_plan(config, allow_dirty=True).image(image.name).annotations
    with isolated_docker_config():
        index_digest = merge_platform_digests(image.name, digests, registries, annotations=annotations)
    result = {
        "image": image.name,
        "index_digest": index_digest,
        "references": [f"{r.repository(image.name)}@{index_digest}" for r in registries],
    }
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.add_argument(
        "--allow-dirty", action="store_true", help="push by digest from a tree with uncommitted changes"
    )
    parser.set_defaults(handler=run_build_command)

    parser = subparsers.add_parser(
        "merge", help="join per-platform digests (from `build --digest-file`) into one index"
    )
    parser.add_argument("digest_files", nargs="+", type=Path, metavar="DIGEST_FILE")
    parser.add_argument("--image", help="image name from the config (default: the only one)")
    parser.add_argument("--output", type=Path, help="write the merged index digest (JSON) here")
    parser.set_defaults(handler=run_merge_command)
