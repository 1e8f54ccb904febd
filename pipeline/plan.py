"""`pipeline plan`: what a release would publish (version, references, platforms, labels), decided once.

`make_plan` is the only place that turns git and the CI context into tags; `release` publishes exactly the
plan it gets from here. Planning has no side effects, except fetching tags when asked to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.config import LoadedConfig, RegistryConfig, load_config
from pipeline.errors import GitError
from pipeline.gitcontext import ci_context, commit_created, read_state, source_url, untracked_in
from pipeline.registry import planned_registries
from pipeline.tags import compute_tags, floating_tags, oci_annotations, oci_labels


@dataclass(frozen=True)
class ImagePlan:
    name: str
    platforms: tuple[str, ...]
    version: str
    tags: tuple[str, ...]
    """Bare tag names; `references` joins them to a registry."""
    labels: dict[str, str]
    annotations: dict[str, str]
    floating: tuple[str, ...] = ()
    """The tags among `tags` that move from release to release (`latest`, `X`, `X.Y`, a channel)."""

    def references(self, registry: RegistryConfig) -> list[str]:
        repository = registry.repository(self.name)
        return [f"{repository}:{tag}" for tag in self.tags]


@dataclass(frozen=True)
class Plan:
    version: str
    revision: str
    created: str
    dirty: bool
    event: str
    images: tuple[ImagePlan, ...]
    registries: tuple[RegistryConfig, ...]
    context_files: tuple[str, ...] = ()
    """Untracked or ignored files a build context would send (after .dockerignore): they make it dirty."""

    def image(self, name: str) -> ImagePlan:
        for image in self.images:
            if name in (image.name, image.name.rsplit("/", 1)[-1]):
                return image
        raise KeyError(name)

    def references(self, image: ImagePlan) -> list[str]:
        """The image's references in every registry, registry by registry."""
        return [reference for registry in self.registries for reference in image.references(registry)]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "revision": self.revision,
            "created": self.created,
            "dirty": self.dirty,
            "untracked_in_context": list(self.context_files),
            "event": self.event,
            "registries": [{"name": r.name, "url": r.url} for r in self.registries],
            "images": [
                {
                    "name": image.name,
                    "platforms": list(image.platforms),
                    "version": image.version,
                    "tags": self.references(image),
                    "labels": dict(image.labels),
                    "annotations": dict(image.annotations),
                }
                for image in self.images
            ],
        }


def require_clean(plan: Plan) -> None:
    """Refuse to publish a dirty tree: its images would not match any commit."""
    if plan.context_files:
        shown = ", ".join(plan.context_files[:3]) + (" ..." if len(plan.context_files) > 3 else "")
        raise GitError(
            f"the build context holds {len(plan.context_files)} untracked or git-ignored file(s) that the build "
            f"would send ({shown}); add them to .dockerignore, commit or remove them, or pass --allow-dirty"
        )
    if plan.dirty:
        raise GitError(
            f"the working tree has uncommitted changes (version {plan.version}); "
            "commit or stash them, or pass --allow-dirty"
        )


def make_plan(
    config: LoadedConfig,
    *,
    registries: Sequence[RegistryConfig] | None = None,
    allow_dirty: bool = True,
    fetch_tags: bool = False,
    environ: Mapping[str, str] | None = None,
    own_files: Sequence[Path] = (),
) -> Plan:
    """The plan for HEAD of the repository containing the config, in the current (or given) CI context.

    `own_files`: files the pipeline itself writes (the release report), which do not make a context dirty.
    """
    environ = os.environ if environ is None else environ
    registries = tuple(registries) if registries is not None else planned_registries(config)
    settings = config.pipeline
    state = read_state(config.root, tag_prefix=settings.version.tag_prefix, fetch_tags=fetch_tags)
    context_files = sent_untracked_files(config, own_files)
    if context_files and not state.dirty:
        state = dataclasses.replace(state, dirty=True)
    version = state.version
    created = commit_created(config.root, state.sha)
    context = ci_context(
        config.root, sha=state.sha, environ=environ, default_branch=settings.version.default_branch
    )
    releases = [release.version for release in state.releases]
    source = "" if settings.labels.source else source_url(config.root, environ)
    images = []
    for image in settings.images:
        labels = oci_labels(
            image=image,
            labels=settings.labels,
            version=version,
            revision=state.sha,
            created=created,
            source=source,
        )
        images.append(
            ImagePlan(
                name=image.name,
                platforms=image.platforms,
                version=str(version),
                tags=compute_tags(version, releases, context, image.tags),
                floating=floating_tags(version, releases, image.tags),
                labels=labels,
                annotations={**oci_annotations(labels), **image.annotations},
            )
        )
    plan = Plan(
        version=str(version),
        revision=state.sha,
        created=created,
        dirty=state.dirty,
        event=context.event,
        images=tuple(images),
        registries=registries,
        context_files=tuple(context_files),
    )
    if not allow_dirty:
        require_clean(plan)
    return plan


def sent_untracked_files(config: LoadedConfig, own_files: Sequence[Path] = ()) -> list[str]:
    """Untracked and git-ignored files (relative to the config's folder) that some image's build context
    would send after its .dockerignore: a build would publish content no commit holds."""
    from pipeline.lint.context import dockerignore_for, is_ignored, parse_dockerignore

    found: list[str] = []
    for image in config.pipeline.images:
        context = config.context_dir(image)
        if not context.is_dir():
            continue  # preflight reports the missing folder
        ignore_file = dockerignore_for(config.dockerfile_path(image), context)
        patterns = parse_dockerignore(ignore_file.read_text()) if ignore_file is not None else []
        own = {path.resolve() for path in own_files}
        for name in untracked_in(config.root, context):
            if not is_ignored(name, patterns) and (context / name).resolve() not in own:
                where = (
                    (context / name).relative_to(config.root) if context.is_relative_to(config.root) else name
                )
                found.append(str(where))
    return sorted(dict.fromkeys(found))


def _print_human(plan: Plan, console: Console) -> None:
    state = "dirty" if plan.dirty else "clean"
    console.print(
        f"version [bold]{plan.version}[/bold]  revision {plan.revision[:12]}  "
        f"created {plan.created}  event {plan.event}  tree {state}"
    )
    for image in plan.images:
        # Folded, never truncated: a reference cut with an ellipsis is no use to anyone checking the plan.
        table = Table(title=f"{image.name} ({', '.join(image.platforms)})", title_justify="left", expand=True)
        table.add_column("registry / label", overflow="fold", ratio=1)
        table.add_column("reference / value", overflow="fold", ratio=3)
        for registry in plan.registries:
            for reference in image.references(registry):
                table.add_row(registry.name, reference)
        table.add_section()
        for key, value in image.labels.items():
            table.add_row(key, value)
        console.print(table)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan = make_plan(config, fetch_tags=args.fetch_tags)
    if args.json:
        sys.stdout.write(json.dumps(plan.to_json(), indent=2) + "\n")
    else:
        _print_human(plan, Console())
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="what a release would publish: version, references, platforms, labels (no side effects)",
        description="Compute the version, image references and labels from git and the CI context.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--fetch-tags",
        action="store_true",
        help="fetch all tags (and unshallow a shallow clone) before planning",
    )
    parser.set_defaults(handler=_run)
