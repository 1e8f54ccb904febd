"""Versions from git tags: which tags are releases, how they sort, and what version a commit gets.

Pure: no git here. `pipeline.gitcontext` reads the repository and hands the facts to `compute_version`.

Rules:
- A release tag is PREFIX+X.Y.Z or bare X.Y.Z, with an optional semver prerelease (`v2.0.0-rc.1`). Tags with
  build metadata (`v1.2.3+build.4`) are not releases: build metadata does not order, so two of them could
  never be told apart.
- Ordering is semver's (prerelease identifiers included, `rc.10` > `rc.9`). Sorting thousands of tags with
  `semver.Version` comparisons is too slow for the version benchmark, so releases carry a precedence key
  that the tests check against `semver.Version.compare`.
- A tagged commit's version is its highest release tag. Otherwise the version is a prerelease above the
  highest release reachable from HEAD: `X.Y.(Z+1)-dev.N+g<sha7>` after a release, `X.Y.Z-rc.1.dev.N+g<sha7>`
  after a prerelease, `0.0.1-dev.N+g<sha7>` with no release at all (N = commits not in the base).
- Uncommitted changes add build metadata: `1.4.0+dirty`, `1.4.1-dev.3+g1a2b3c4.dirty`.

Image tags cannot contain `+`. `image_tag` maps it to `_`: semver never uses `_`, so the mapping is
reversible and no two versions share an image tag (Helm maps OCI chart versions the same way).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import semver

log = logging.getLogger(__name__)

DEFAULT_TAG_PREFIX = "v"
BUILD_SEPARATOR_IN_TAGS = "_"

# The semver 2.0.0 grammar with ASCII digits only (`\d` would accept other scripts' digits).
_NUMBER = r"0|[1-9][0-9]*"
_IDENTIFIER = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_SEMVER = re.compile(
    rf"(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<prerelease>(?:{_IDENTIFIER})(?:\.(?:{_IDENTIFIER}))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)

# (kind, number, text): numeric identifiers sort below alphanumeric ones, numbers by value, text by ASCII.
IdentifierKey = tuple[int, int, str]
# (major, minor, patch, is-final, prerelease identifiers): a final release sorts above its prereleases.
PrecedenceKey = tuple[int, int, int, int, tuple[IdentifierKey, ...]]


def _identifier_key(identifier: str) -> IdentifierKey:
    if identifier.isdigit():
        return (0, int(identifier), "")
    return (1, 0, identifier)


def _key(major: int, minor: int, patch: int, prerelease: str | None) -> PrecedenceKey:
    if prerelease is None:
        return (major, minor, patch, 1, ())
    return (major, minor, patch, 0, tuple(_identifier_key(part) for part in prerelease.split(".")))


def precedence_key(version: semver.Version) -> PrecedenceKey:
    """A sort key that orders like `semver.Version.compare` (build metadata ignored, as semver does)."""
    return _key(version.major, version.minor, version.patch, version.prerelease)


class Release(NamedTuple):
    """A release tag. Sorts by semver precedence first (then by tag name, so that `v1.2.3` and `1.2.3` on
    one commit still sort deterministically); compare `key` for "the same version".

    A NamedTuple because a repository can have thousands of tags and a frozen dataclass costs several
    times more to build (see the version benchmark).
    """

    key: PrecedenceKey
    tag: str
    text: str

    @property
    def version(self) -> semver.Version:
        return semver.Version.parse(self.text)

    @property
    def is_prerelease(self) -> bool:
        return self.key[3] == 0

    @property
    def major(self) -> int:
        return self.key[0]

    @property
    def minor(self) -> int:
        return self.key[1]

    @property
    def channel(self) -> str | None:
        """The first prerelease identifier (`rc`, `beta`...), or None for finals and numeric identifiers."""
        if not self.is_prerelease:
            return None
        kind, _, text = self.key[4][0]
        return text if kind == 1 else None


def parse_release_tag(name: str, prefix: str = DEFAULT_TAG_PREFIX) -> Release | None:
    """The release a git tag names, or None (logged at debug) when it is not PREFIX+X.Y.Z or X.Y.Z."""
    text = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    match = _SEMVER.fullmatch(text)
    if match is None:
        log.debug("ignoring tag %s: not a release tag (%sX.Y.Z or X.Y.Z)", name, prefix)
        return None
    major, minor, patch, prerelease, build = match.groups()
    if build is not None:
        log.debug("ignoring tag %s: build metadata does not order, so it cannot be a release", name)
        return None
    return Release(_key(int(major), int(minor), int(patch), prerelease), name, text)


def parse_release_tags(names: Iterable[str], prefix: str = DEFAULT_TAG_PREFIX) -> list[Release]:
    """The release tags among `names`, highest first."""
    releases = [release for name in names if (release := parse_release_tag(name, prefix)) is not None]
    releases.sort(reverse=True)
    return releases


def compute_version(
    *,
    head_tags: Sequence[Release],
    base: Release | None,
    distance: int,
    sha: str,
    dirty: bool,
) -> semver.Version:
    """The version of a commit.

    `head_tags`: release tags on the commit itself. `base`: the highest release reachable from it (ignored
    when `head_tags` is not empty). `distance`: commits reachable from the commit but not from `base` (all
    commits when there is no base).
    """
    if head_tags:
        release = max(head_tags).version
        return release.replace(build="dirty") if dirty else release
    if distance < 1:
        raise ValueError(f"an untagged commit is at least 1 commit from its base (got distance {distance})")
    if not re.fullmatch(r"[0-9a-f]{7,}", sha):
        raise ValueError(f"{sha!r} is not a commit id")
    build = f"g{sha[:7]}" + (".dirty" if dirty else "")
    if base is None:
        return semver.Version(0, 0, 1, prerelease=f"dev.{distance}", build=build)
    version = base.version
    if base.is_prerelease:
        return version.replace(prerelease=f"{version.prerelease}.dev.{distance}", build=build)
    return semver.Version(
        version.major, version.minor, version.patch + 1, prerelease=f"dev.{distance}", build=build
    )


def is_release(version: semver.Version) -> bool:
    """A clean tagged release or prerelease: no `dev`/`dirty` build metadata."""
    return version.build is None


def image_tag(version: semver.Version | str) -> str:
    """The version as an image tag: `+` (not allowed in tags) becomes `_` (never used by semver)."""
    return str(version).replace("+", BUILD_SEPARATOR_IN_TAGS)


def version_from_image_tag(tag: str) -> semver.Version:
    """The inverse of `image_tag`."""
    return semver.Version.parse(tag.replace(BUILD_SEPARATOR_IN_TAGS, "+", 1))
