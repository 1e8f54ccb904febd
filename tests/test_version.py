"""The pure version rules: release tags, semver order, the version of a commit, the `+` mapping."""

from __future__ import annotations

import re

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from pipeline.version import (
    Release,
    compute_version,
    image_tag,
    parse_release_tag,
    parse_release_tags,
    precedence_key,
    version_from_image_tag,
)

SHA = "1a2b3c4d5e6f7081920a1b2c3d4e5f6071829304"
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def release(name: str, prefix: str = "v") -> Release:
    parsed = parse_release_tag(name, prefix)
    assert parsed is not None, name
    return parsed


@pytest.mark.parametrize(
    ("name", "prefix", "expected"),
    [
        ("v1.2.3", "v", "1.2.3"),
        ("1.2.3", "v", "1.2.3"),
        ("v0.0.0", "v", "0.0.0"),
        ("v2.0.0-rc.1", "v", "2.0.0-rc.1"),
        ("v1.0.0-alpha.beta-2.10", "v", "1.0.0-alpha.beta-2.10"),
        ("release-1.2.3", "release-", "1.2.3"),
        ("1.2.3", "release-", "1.2.3"),
        ("1.2.3", "", "1.2.3"),
        ("v1.2", "v", None),
        ("v1.2.3.4", "v", None),
        ("v01.2.3", "v", None),
        ("v1.2.3-01", "v", None),
        ("v1.2.3-", "v", None),
        ("V1.2.3", "v", None),
        ("vv1.2.3", "v", None),
        ("v1.2.3", "", None),
        ("v1.2.3+build.5", "v", None),
        ("latest", "v", None),
        ("docs-2024", "v", None),
        ("v1.2.3 ", "v", None),
        ("v١.2.3", "v", None),
    ],
)
def test_parse_release_tag(name: str, prefix: str, expected: str | None) -> None:
    parsed = parse_release_tag(name, prefix)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.tag, parsed.text, str(parsed.version)) == (name, expected, expected)


def test_ignored_tags_are_said_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="pipeline.version"):
        assert parse_release_tag("nightly-build") is None
    assert "nightly-build" in caplog.text


def test_semver_spec_order() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0-rc.9",
        "1.0.0-rc.10",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = list(reversed(ordered[::2])) + ordered[1::2]
    assert [r.text for r in sorted(release(f"v{text}") for text in shuffled)] == ordered


def test_parse_release_tags_sorts_highest_first_and_drops_others() -> None:
    releases = parse_release_tags(["v1.9.4", "v2.3.0", "latest", "2.0.0-rc.1", "v10.0.0", "junk"])
    assert [r.tag for r in releases] == ["v10.0.0", "v2.3.0", "2.0.0-rc.1", "v1.9.4"]


def test_same_version_with_and_without_prefix_has_the_same_key() -> None:
    assert release("v1.2.3").key == release("1.2.3").key
    assert max(release("v1.2.3"), release("1.2.3")).tag == "v1.2.3"  # deterministic, by name


def test_release_properties() -> None:
    rc = release("v2.0.0-rc.3")
    assert (rc.is_prerelease, rc.channel, rc.major, rc.minor) == (True, "rc", 2, 0)
    assert release("v2.0.0").channel is None
    assert release("v2.0.0-1").channel is None


VERSION_CASES = [
    # (head tags, base, distance, dirty, expected)
    (["v1.4.0"], None, 0, False, "1.4.0"),
    (["v1.4.0"], None, 0, True, "1.4.0+dirty"),
    (["v1.4.0-rc.2", "v1.4.0"], None, 0, False, "1.4.0"),
    (["v1.4.0", "1.4.0"], None, 0, False, "1.4.0"),
    (["v2.0.0-rc.1"], None, 0, False, "2.0.0-rc.1"),
    ([], "v1.4.0", 3, False, "1.4.1-dev.3+g1a2b3c4"),
    ([], "v1.4.0", 3, True, "1.4.1-dev.3+g1a2b3c4.dirty"),
    ([], "v2.0.0-rc.1", 5, False, "2.0.0-rc.1.dev.5+g1a2b3c4"),
    ([], None, 7, False, "0.0.1-dev.7+g1a2b3c4"),
    ([], None, 1, True, "0.0.1-dev.1+g1a2b3c4.dirty"),
]


@pytest.mark.parametrize(("head", "base", "distance", "dirty", "expected"), VERSION_CASES)
def test_compute_version(
    head: list[str], base: str | None, distance: int, dirty: bool, expected: str
) -> None:
    version = compute_version(
        head_tags=[release(t) for t in head],
        base=release(base) if base else None,
        distance=distance,
        sha=SHA,
        dirty=dirty,
    )
    assert str(version) == expected


def test_untagged_commit_needs_a_distance_and_a_sha() -> None:
    with pytest.raises(ValueError, match="distance"):
        compute_version(head_tags=[], base=release("v1.0.0"), distance=0, sha=SHA, dirty=False)
    with pytest.raises(ValueError, match="commit id"):
        compute_version(head_tags=[], base=None, distance=1, sha="HEAD", dirty=False)


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("1.4.0", "1.4.0"),
        ("1.4.0+dirty", "1.4.0_dirty"),
        ("1.4.1-dev.3+g1a2b3c4", "1.4.1-dev.3_g1a2b3c4"),
        ("1.4.1-dev.3+g1a2b3c4.dirty", "1.4.1-dev.3_g1a2b3c4.dirty"),
        ("2.0.0-rc.1.dev.5+g1a2b3c4", "2.0.0-rc.1.dev.5_g1a2b3c4"),
    ],
)
def test_image_tag_maps_plus_to_underscore(version: str, tag: str) -> None:
    assert image_tag(semver.Version.parse(version)) == tag
    assert str(version_from_image_tag(tag)) == version


# --- properties ------------------------------------------------------------------------------------------

identifiers = st.one_of(
    st.integers(min_value=0, max_value=30).map(str),
    st.from_regex(r"[0-9]{0,2}[A-Za-z-][0-9A-Za-z-]{0,3}", fullmatch=True),
)
prereleases = st.one_of(st.none(), st.lists(identifiers, min_size=1, max_size=4).map(".".join))
versions = st.builds(
    semver.Version,
    major=st.integers(min_value=0, max_value=5),
    minor=st.integers(min_value=0, max_value=5),
    patch=st.integers(min_value=0, max_value=5),
    prerelease=prereleases,
)


@given(versions, versions)
def test_precedence_key_orders_like_semver(a: semver.Version, b: semver.Version) -> None:
    expected = a.compare(b)
    key_a, key_b = precedence_key(a), precedence_key(b)
    assert (key_a > key_b) - (key_a < key_b) == expected


@given(versions, versions)
def test_release_tags_order_like_semver(a: semver.Version, b: semver.Version) -> None:
    ra, rb = release(f"v{a}"), release(f"{b}")
    assert (ra.key > rb.key) - (ra.key < rb.key) == a.compare(b)
    if a.compare(b):
        assert (ra > rb) == (a > b)


@given(versions, st.integers(min_value=1, max_value=100_000), st.booleans())
def test_untagged_version_sorts_above_its_base_and_below_the_next_release(
    base: semver.Version, distance: int, dirty: bool
) -> None:
    version = compute_version(head_tags=[], base=release(f"v{base}"), distance=distance, sha=SHA, dirty=dirty)
    assert version > base
    if base.prerelease is None:
        assert version < base.bump_patch()
    else:
        assert version < semver.Version(base.major, base.minor, base.patch)
    assert DOCKER_TAG.fullmatch(image_tag(version))
    assert version_from_image_tag(image_tag(version)) == version
    assert str(version_from_image_tag(image_tag(version))) == str(version)


@given(st.integers(min_value=1, max_value=10**6))
def test_more_commits_sort_higher(distance: int) -> None:
    def at(n: int) -> semver.Version:
        return compute_version(head_tags=[], base=release("v1.0.0"), distance=n, sha=SHA, dirty=False)

    assert at(distance) < at(distance + 1)
