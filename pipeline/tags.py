"""Image tags and OCI labels of an image, from the version, every release tag of the repo and the CI context.

Pure: the facts come from `pipeline.gitcontext`, the assembly into a plan from `pipeline.plan`.

The floating release tags are decided against ALL release tags of the repository, never against "the tag
that was just pushed": a `1.9.4` backport tagged after `2.3.0` gets `1.9.4` and `1.9`, while `1` stays on
its major's highest release and `latest` stays on `2.3.0`.

Tag kinds, in the order they are emitted:
- `semver`: the version itself (`1.4.1-dev.3+g1a2b3c4` as `1.4.1-dev.3_g1a2b3c4`, see `pipeline.version`).
- `major_minor`, `major`, `latest`: at a clean release tag only, and only when no higher final release exists
  in the same X.Y, in the same X (and X >= 1), or at all. Prereleases never count as "higher" here.
- `channel`: at a clean prerelease tag, the first identifier (`rc`, `beta`), if no higher prerelease of that
  channel exists; numeric first identifiers make no channel.
- `branch` (push/local), `edge` (push/local on the default branch), `pr` (`pr-N`), `nightly` (schedule).
- `sha`: `sha-<7 hex>`, always.
A dirty tree gets only its `semver` tag: its content is neither what a release tag names nor what a commit,
branch or PR holds, so it takes no `sha-`, branch, `edge`, `pr-N` or `nightly` tag either.
Prefix and suffix (`-alpine` variants) apply to every computed tag, `latest` included, so that a variant
sharing a repository never takes the plain image's `latest`; raw tags are added verbatim.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import semver

from pipeline.config import ALL_TAG_KINDS, ImageConfig, LabelsConfig, TagKind, TagsConfig
from pipeline.errors import ConfigError
from pipeline.version import PrecedenceKey, image_tag, is_release, precedence_key

log = logging.getLogger(__name__)

Event = Literal["push", "tag", "pull_request", "schedule", "local"]
EVENTS: tuple[Event, ...] = ("push", "tag", "pull_request", "schedule", "local")

MAX_TAG_LENGTH = 128
_VALID_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_NOT_IN_BRANCH_TAG = re.compile(r"[^a-z0-9_.-]")
# A branch named like another kind's tag would overwrite it (a branch `latest` moving `latest`).
_RESERVED_BRANCH_TAG = re.compile(r"latest|edge|nightly|sha-[0-9a-f]+|pr-[0-9]+|[0-9]+(?:\.[0-9]+){0,2}")

OCI = "org.opencontainers.image."
COMPUTED_LABELS = (f"{OCI}version", f"{OCI}revision", f"{OCI}created")


@dataclass(frozen=True)
class CIContext:
    """What triggered the run. `sha` is the commit being built (full or abbreviated hex)."""

    event: Event
    sha: str
    branch: str | None = None
    default_branch: str | None = None
    pr_number: int | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown event {self.event!r} (one of {', '.join(EVENTS)})")
        if not re.fullmatch(r"[0-9a-f]{7,64}", self.sha):
            raise ValueError(f"{self.sha!r} is not a commit id")
        if self.event == "pull_request" and self.pr_number is None:
            raise ValueError("a pull_request context needs the PR number")


def sanitize_branch(name: str, max_length: int = MAX_TAG_LENGTH) -> str:
    """A branch name as a tag: lowercase, others as `-`, no leading `.`/`-`, at most `max_length` long."""
    return _NOT_IN_BRANCH_TAG.sub("-", name.lower()).lstrip(".-")[:max_length]


def _has_higher(version_key: PrecedenceKey, others: Iterable[PrecedenceKey]) -> bool:
    return any(other > version_key for other in others)


def release_tags(version: semver.Version, releases: Iterable[semver.Version]) -> list[tuple[TagKind, str]]:
    """The version-derived tags (before prefix/suffix), by kind."""
    tags: list[tuple[TagKind, str]] = [("semver", image_tag(version))]
    if not is_release(version):
        return tags
    key = precedence_key(version)
    keys = [precedence_key(release) for release in releases if release.build is None]
    if version.prerelease is None:
        finals = [k for k in keys if k[3] == 1]
        if not _has_higher(key, (k for k in finals if k[:2] == key[:2])):
            tags.append(("major_minor", f"{version.major}.{version.minor}"))
        if version.major >= 1 and not _has_higher(key, (k for k in finals if k[0] == key[0])):
            tags.append(("major", str(version.major)))
        if not _has_higher(key, finals):
            tags.append(("latest", "latest"))
        return tags
    first = key[4][0]
    if first[0] == 1:
        same_channel = (k for k in keys if k[3] == 0 and k[4][0] == first)
        if not _has_higher(key, same_channel):
            tags.append(("channel", first[2]))
    return tags


def context_tags(context: CIContext, max_branch_length: int = MAX_TAG_LENGTH) -> list[tuple[TagKind, str]]:
    """The event-derived tags (before prefix/suffix), by kind."""
    tags: list[tuple[TagKind, str]] = []
    if context.event in ("push", "local") and context.branch:
        branch = sanitize_branch(context.branch, max_branch_length)
        if not branch:
            log.warning("branch %r has no characters usable in a tag; no branch tag", context.branch)
        elif _RESERVED_BRANCH_TAG.fullmatch(branch):
            log.warning(
                "branch %r would overwrite the %r tag of another kind; no branch tag", context.branch, branch
            )
        else:
            tags.append(("branch", branch))
        if context.default_branch is not None and context.branch == context.default_branch:
            tags.append(("edge", "edge"))
    if context.event == "pull_request":
        tags.append(("pr", f"pr-{context.pr_number}"))
    if context.event == "schedule":
        tags.append(("nightly", "nightly"))
    tags.append(("sha", f"sha-{context.sha[:7]}"))
    return tags


def _check_tag(tag: str, origin: str) -> str:
    if not _VALID_TAG.fullmatch(tag):
        raise ConfigError(
            f"{origin} gives the image tag {tag!r}, which is not valid "
            f"([A-Za-z0-9_] then [A-Za-z0-9_.-], at most {MAX_TAG_LENGTH} characters); change it"
        )
    return tag


def compute_tags(
    version: semver.Version,
    releases: Iterable[semver.Version],
    context: CIContext,
    config: TagsConfig | None = None,
) -> tuple[str, ...]:
    """Every tag one image gets, bare (no repository), in kind order, without duplicates.

    `releases`: all release versions tagged anywhere in the repository, reachable from HEAD or not.
    """
    config = config if config is not None else TagsConfig()
    unknown = set(config.kinds) - set(ALL_TAG_KINDS)
    if unknown:
        raise ConfigError(
            f"tags.kinds: unknown kind {sorted(unknown)[0]!r} (one of {', '.join(ALL_TAG_KINDS)})"
        )
    affix = len(config.prefix) + len(config.suffix)
    computed = release_tags(version, releases)
    if not is_dirty(version):
        # A dirty build is no commit's content: it must not take the tags that name a commit or branch.
        computed += context_tags(context, max(1, MAX_TAG_LENGTH - affix))
    result: dict[str, None] = {}
    for kind, tag in computed:
        if kind in config.kinds:
            result[
                _check_tag(
                    f"{config.prefix}{tag}{config.suffix}", f"tag kind {kind!r} with tags.prefix/suffix"
                )
            ] = None
    for raw in config.raw:
        result[_check_tag(raw, "tags.raw")] = None
    return tuple(result)


def is_dirty(version: semver.Version) -> bool:
    """Built from uncommitted changes (`+dirty`, `+g1a2b3c4.dirty`)."""
    return version.build is not None and "dirty" in version.build.split(".")


FLOATING_KINDS: tuple[TagKind, ...] = ("major_minor", "major", "latest", "channel")


def floating_tags(
    version: semver.Version, releases: Iterable[semver.Version], config: TagsConfig | None = None
) -> tuple[str, ...]:
    """The tags among `compute_tags` that move from release to release (`X.Y`, `X`, `latest`, `rc`): the
    ones a release must never move to a lower version than the registry's."""
    config = config if config is not None else TagsConfig()
    return tuple(
        f"{config.prefix}{tag}{config.suffix}"
        for kind, tag in release_tags(version, releases)
        if kind in FLOATING_KINDS and kind in config.kinds
    )


def oci_labels(
    *,
    image: ImageConfig,
    labels: LabelsConfig,
    version: semver.Version | str,
    revision: str,
    created: str,
    source: str = "",
) -> dict[str, str]:
    """`org.opencontainers.image.*` labels, then the image's own labels.

    Project-wide values come from `labels`, the image's `description` wins over the project's, `source`
    (e.g. derived from the CI or the origin remote) fills `source`/`url` when the config leaves them empty.
    Version, revision and created are computed: an image label setting them is a config error, since the
    plan would then publish metadata that contradicts its tags.
    """
    for key in COMPUTED_LABELS:
        if key in image.labels:
            raise ConfigError(
                f"images[{image.name}].labels sets {key}, which is computed from git; remove it"
            )
    source_url = labels.source or source
    values: dict[str, str] = {
        "title": labels.title or image.short_name,
        "description": image.description or labels.description,
        "url": labels.url or source_url,
        "source": source_url,
        "version": str(version),
        "revision": revision,
        "created": created,
        "licenses": labels.licenses,
        "vendor": labels.vendor,
    }
    result = {f"{OCI}{key}": value for key, value in values.items() if value}
    result.update(image.labels)
    return result


def oci_annotations(labels: Mapping[str, str]) -> dict[str, str]:
    """The OCI subset of the labels, for the image index and manifests (other labels stay labels only)."""
    return {key: value for key, value in labels.items() if key.startswith(OCI)}
