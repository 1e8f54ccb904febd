"""`pipeline lint`: the subcommand, which Dockerfiles it lints, and its exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.cachemeasure import measure_image, render_measurement
from pipeline.config import LintConfig, LoadedConfig, load_config
from pipeline.errors import ConfigError, LintError
from pipeline.lint.output import FORMATS, render
from pipeline.lint.runner import Target, lint_targets, shown


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
        own_images=tuple(image.name for image in config.pipeline.images) if config is not None else (),
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
