"""The pure tag and label rules: table-driven cases, then properties over random sets of release tags."""

from __future__ import annotations

import re

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import ImageConfig, LabelsConfig, TagKind, TagsConfig
from pipeline.errors import ConfigError
from pipeline.tags import (
    CIContext,
    compute_tags,
    context_tags,
    oci_annotations,
    oci_labels,
    release_tags,
    sanitize_branch,
)

SHA = "1a2b3c4d5e6f7081920a1b2c3d4e5f6071829304"
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
V = semver.Version.parse

RELEASES = [
    V(text)
    for text in (
        "0.3.0", "0.3.1", "1.0.0", "1.1.0", "1.1.1", "1.9.3", "1.9.4", "2.0.0-rc.1", "2.0.0", "2.3.0",
        "2.4.0-rc.1", "2.4.0-rc.2", "2.4.0-beta.1", "3.0.0-rc.9", "3.0.0-rc.10", "1.0.0-1",
    )
]  # fmt: skip
TAG_EVENT = CIContext(event="tag", sha=SHA)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.3.0", ["2.3.0", "2.3", "2", "latest"]),
        # the backport: `1.9` and `1` move to it, `latest` stays on 2.3.0
        ("1.9.4", ["1.9.4", "1.9", "1"]),
        ("1.9.3", ["1.9.3"]),
        ("1.1.1", ["1.1.1", "1.1"]),
        ("1.1.0", ["1.1.0"]),
        ("1.0.0", ["1.0.0", "1.0"]),
        ("0.3.1", ["0.3.1", "0.3"]),
        ("0.3.0", ["0.3.0"]),
        ("2.0.0", ["2.0.0", "2.0"]),
        ("2.0.0-rc.1", ["2.0.0-rc.1"]),
        ("2.4.0-rc.1", ["2.4.0-rc.1"]),
        ("2.4.0-beta.1", ["2.4.0-beta.1", "beta"]),
        ("3.0.0-rc.10", ["3.0.0-rc.10", "rc"]),
        ("3.0.0-rc.9", ["3.0.0-rc.9"]),
        ("1.0.0-1", ["1.0.0-1"]),
        ("2.3.1-dev.3+g1a2b3c4", ["2.3.1-dev.3_g1a2b3c4"]),
        ("2.3.0+dirty", ["2.3.0_dirty"]),
        ("9.0.0", ["9.0.0", "9.0", "9", "latest"]),
    ],
)
def test_release_tags(version: str, expected: list[str]) -> None:
    assert list(compute_tags(V(version), RELEASES, TAG_EVENT, TagsConfig(kinds=_all_but("sha")))) == expected


def _all_but(*kinds: str) -> tuple[TagKind, ...]:
    return tuple(kind for kind in TagsConfig().kinds if kind not in kinds)


def test_two_tags_on_one_commit_do_not_matter_to_the_rules() -> None:
    # v1.2.3 and 1.2.3 both listed: the same release, not a "higher" one
    releases = [V("1.2.3"), V("1.2.3"), V("1.2.2")]
    assert compute_tags(V("1.2.3"), releases, TAG_EVENT) == ("1.2.3", "1.2", "1", "latest", "sha-1a2b3c4")


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (CIContext("push", SHA, branch="main", default_branch="main"), ["main", "edge", "sha-1a2b3c4"]),
        (
            CIContext("push", SHA, branch="feature/Foo_Bar", default_branch="main"),
            ["feature-foo_bar", "sha-1a2b3c4"],
        ),
        (CIContext("local", SHA, branch="main", default_branch="main"), ["main", "edge", "sha-1a2b3c4"]),
        (CIContext("local", SHA, branch=None, default_branch="main"), ["sha-1a2b3c4"]),
        (CIContext("push", SHA, branch="main", default_branch=None), ["main", "sha-1a2b3c4"]),
        (
            CIContext("pull_request", SHA, branch="fix", default_branch="main", pr_number=12),
            ["pr-12", "sha-1a2b3c4"],
        ),
        (CIContext("schedule", SHA, branch="main", default_branch="main"), ["nightly", "sha-1a2b3c4"]),
        (CIContext("tag", SHA, default_branch="main"), ["sha-1a2b3c4"]),
        (CIContext("push", SHA, branch="latest", default_branch="main"), ["sha-1a2b3c4"]),
        (CIContext("push", SHA, branch="2.3", default_branch="main"), ["sha-1a2b3c4"]),
        (CIContext("push", SHA, branch="release/2.3", default_branch="main"), ["release-2.3", "sha-1a2b3c4"]),
    ],
)
def test_context_tags(context: CIContext, expected: list[str]) -> None:
    assert [tag for _, tag in context_tags(context)] == expected


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("main", "main"),
        ("Feature/ABC", "feature-abc"),
        ("dependabot/npm_and_yarn/lodash-4.17.21", "dependabot-npm_and_yarn-lodash-4.17.21"),
        ("..hidden", "hidden"),
        ("-.-x", "x"),
        ("a@b#c d", "a-b-c-d"),
        ("ümlaut", "mlaut"),
        ("x" * 300, "x" * 128),
        ("///", ""),
    ],
)
def test_sanitize_branch(branch: str, expected: str) -> None:
    assert sanitize_branch(branch) == expected


def test_invalid_context() -> None:
    with pytest.raises(ValueError, match="PR number"):
        CIContext("pull_request", SHA)
    with pytest.raises(ValueError, match="commit id"):
        CIContext("push", "main")
    with pytest.raises(ValueError, match="event"):
        CIContext("release", SHA)  # type: ignore[arg-type]


def test_prefix_and_suffix_apply_to_every_computed_tag_but_not_raw_ones() -> None:
    config = TagsConfig(suffix="-alpine", raw=("stable",))
    context = CIContext("push", SHA, branch="main", default_branch="main")
    assert compute_tags(V("2.3.0"), RELEASES, context, config) == (
        "2.3.0-alpine", "2.3-alpine", "2-alpine", "latest-alpine",
        "main-alpine", "edge-alpine", "sha-1a2b3c4-alpine", "stable",
    )  # fmt: skip
    prefixed = compute_tags(V("2.3.0"), RELEASES, TAG_EVENT, TagsConfig(prefix="py3.12-"))
    assert prefixed == ("py3.12-2.3.0", "py3.12-2.3", "py3.12-2", "py3.12-latest", "py3.12-sha-1a2b3c4")


def test_kinds_select_which_tags_are_emitted() -> None:
    context = CIContext("push", SHA, branch="main", default_branch="main")
    assert compute_tags(V("2.3.0"), RELEASES, context, TagsConfig(kinds=("semver", "sha"))) == (
        "2.3.0",
        "sha-1a2b3c4",
    )
    assert compute_tags(V("2.3.0"), RELEASES, context, TagsConfig(kinds=(), raw=("x",))) == ("x",)


def test_long_branch_leaves_room_for_the_suffix() -> None:
    context = CIContext("push", SHA, branch="b" * 200, default_branch="main")
    tags = compute_tags(V("0.0.1-dev.1+g1a2b3c4"), [], context, TagsConfig(suffix="-alpine"))
    branch = next(tag for tag in tags if tag.startswith("bbb"))
    assert len(branch) == 128
    assert branch.endswith("-alpine")


@pytest.mark.parametrize("raw", ["", "-x", "a+b", "x" * 129, "a b"])
def test_invalid_raw_tag_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"tags\.raw"):
        compute_tags(V("1.0.0"), [], TAG_EVENT, TagsConfig(raw=(raw,)))


def test_invalid_prefix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="prefix/suffix"):
        compute_tags(V("1.0.0"), [], TAG_EVENT, TagsConfig(prefix="-"))


def test_oci_labels_defaults_overrides_and_annotations() -> None:
    image = ImageConfig(name="acme/hello", description="Says hello", labels={"com.acme.team": "core"})
    project = LabelsConfig(description="Acme images", licenses="MIT", url="https://acme.example")
    labels = oci_labels(
        image=image,
        labels=project,
        version=V("1.4.1-dev.3+g1a2b3c4"),
        revision=SHA,
        created="2023-11-14T22:14:20Z",
        source="https://github.com/acme/hello",
    )
    oci = "org.opencontainers.image."
    assert labels == {
        f"{oci}title": "hello",
        f"{oci}description": "Says hello",
        f"{oci}url": "https://acme.example",
        f"{oci}source": "https://github.com/acme/hello",
        f"{oci}version": "1.4.1-dev.3+g1a2b3c4",
        f"{oci}revision": SHA,
        f"{oci}created": "2023-11-14T22:14:20Z",
        f"{oci}licenses": "MIT",
        "com.acme.team": "core",
    }
    assert oci_annotations(labels) == {k: v for k, v in labels.items() if k.startswith(oci)}


def test_oci_labels_project_title_and_image_label_override() -> None:
    image = ImageConfig(name="hello", labels={"org.opencontainers.image.title": "Hello!"})
    labels = oci_labels(
        image=image, labels=LabelsConfig(title="Acme", source="https://x.example/s"), version="1.0.0",
        revision=SHA, created="2023-11-14T22:14:20Z", source="https://ignored.example",
    )  # fmt: skip
    assert labels["org.opencontainers.image.title"] == "Hello!"
    assert labels["org.opencontainers.image.source"] == "https://x.example/s"
    assert labels["org.opencontainers.image.url"] == "https://x.example/s"
    assert "org.opencontainers.image.description" not in labels  # empty values are left out


def test_image_labels_cannot_contradict_the_computed_ones() -> None:
    image = ImageConfig(name="hello", labels={"org.opencontainers.image.version": "9.9.9"})
    with pytest.raises(ConfigError, match="computed from git"):
        oci_labels(image=image, labels=LabelsConfig(), version="1.0.0", revision=SHA, created="x")


# --- properties ------------------------------------------------------------------------------------------

finals = st.builds(
    semver.Version,
    major=st.integers(min_value=0, max_value=4),
    minor=st.integers(min_value=0, max_value=4),
    patch=st.integers(min_value=0, max_value=4),
)
prereleases = st.builds(
    lambda v, channel, n: v.replace(prerelease=f"{channel}.{n}"),
    finals,
    st.sampled_from(["rc", "beta", "alpha"]),
    st.integers(min_value=0, max_value=12),
)
release_sets = st.lists(st.one_of(finals, prereleases), min_size=1, max_size=25)
contexts = st.one_of(
    st.just(TAG_EVENT),
    st.builds(
        CIContext,
        event=st.sampled_from(["push", "local", "schedule"]),
        sha=st.just(SHA),
        branch=st.sampled_from([None, "main", "release/1.x", "Feature/X"]),
        default_branch=st.just("main"),
    ),
    st.builds(CIContext, event=st.just("pull_request"), sha=st.just(SHA), pr_number=st.integers(1, 9999)),
)


@given(release_sets, contexts)
def test_floating_tags_go_only_to_the_maxima(releases: list[semver.Version], context: CIContext) -> None:
    final_versions = [v for v in releases if v.prerelease is None]
    for version in releases:
        tags = set(compute_tags(version, releases, context))
        is_final = version.prerelease is None
        same_major = [v for v in final_versions if v.major == version.major]
        same_minor = [v for v in same_major if v.minor == version.minor]
        assert ("latest" in tags) == (is_final and version == max(final_versions))
        major = str(version.major)
        assert (major in tags) == (is_final and version.major >= 1 and version == max(same_major))
        minor = f"{version.major}.{version.minor}"
        assert (minor in tags) == (is_final and version == max(same_minor))
        assert str(version) in tags
        assert f"sha-{SHA[:7]}" in tags
        if version.prerelease is not None:
            channel = version.prerelease.split(".")[0]
            in_channel = [v for v in releases if v.prerelease and v.prerelease.split(".")[0] == channel]
            assert (channel in tags) == (version == max(in_channel))
        assert all(DOCKER_TAG.fullmatch(tag) for tag in tags)


@given(release_sets, contexts)
def test_exactly_the_highest_final_gets_latest(releases: list[semver.Version], context: CIContext) -> None:
    distinct = {str(v): v for v in releases}.values()
    winners = [v for v in distinct if "latest" in compute_tags(v, releases, context)]
    finals_present = any(v.prerelease is None for v in releases)
    assert len(winners) == (1 if finals_present else 0)


@given(release_sets, finals, st.integers(min_value=1, max_value=50))
def test_dev_and_dirty_versions_never_get_floating_tags(
    releases: list[semver.Version], base: semver.Version, distance: int
) -> None:
    dev = semver.Version(
        base.major, base.minor, base.patch + 1, prerelease=f"dev.{distance}", build="g1a2b3c4"
    )
    for version in (dev, base.replace(build="dirty")):
        kinds = {kind for kind, _ in release_tags(version, [*releases, base])}
        assert kinds == {"semver"}
