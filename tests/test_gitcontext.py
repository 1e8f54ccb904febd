"""Versions and contexts read from real throwaway repositories and simulated GitHub Actions environments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import GitError
from pipeline.gitcontext import (
    _https_url,
    ci_context,
    commit_created,
    describe,
    github_context,
    local_default_branch,
    open_repo,
    read_state,
    source_url,
)
from tests.fixtures.gitrepos import EPOCH, STEP, GitRepo, GitRepoFactory


def version(repo: GitRepo, prefix: str = "v") -> str:
    return str(describe(repo.path, tag_prefix=prefix))


def test_no_tags_counts_every_commit(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.commits_n(2)
    assert version(repo) == f"0.0.1-dev.3+g{repo.head[:7]}"


@pytest.mark.parametrize("annotated", [False, True])
def test_tagged_and_untagged_commits(git_repo_factory: GitRepoFactory, annotated: bool) -> None:
    repo = git_repo_factory()
    repo.tag("v1.4.0", annotated=annotated)
    assert version(repo) == "1.4.0"
    repo.commits_n(3)
    assert version(repo) == f"1.4.1-dev.3+g{repo.head[:7]}"


def test_prerelease_then_commits(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.tag("v1.9.0")
    repo.commit()
    repo.tag("v2.0.0-rc.1", annotated=True)
    assert version(repo) == "2.0.0-rc.1"
    repo.commits_n(2)
    assert version(repo) == f"2.0.0-rc.1.dev.2+g{repo.head[:7]}"


def test_highest_of_two_tags_on_one_commit_wins(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.tag("v2.0.0-rc.2")
    repo.tag("v2.0.0", annotated=True)
    repo.tag("docs-final")
    assert version(repo) == "2.0.0"


def test_non_release_tags_and_other_prefixes_are_ignored(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.tag("1.0.0")
    repo.commit()
    repo.tag("release-7.0.0")
    repo.tag("latest")
    repo.commit()
    assert version(repo) == f"1.0.1-dev.2+g{repo.head[:7]}"
    assert version(repo, prefix="release-") == f"7.0.1-dev.1+g{repo.head[:7]}"


def test_semver_order_not_git_order(git_repo_factory: GitRepoFactory) -> None:
    # rc.10 was tagged first, rc.9 later and nearer: semver still says rc.10
    repo = git_repo_factory()
    repo.tag("v1.0.0-rc.10")
    repo.commit()
    repo.tag("v1.0.0-rc.9", annotated=True)
    repo.commit()
    assert version(repo) == f"1.0.0-rc.10.dev.2+g{repo.head[:7]}"


def _backport_repo(git_repo_factory: GitRepoFactory) -> GitRepo:
    """main: 1.9.3 -> 2.3.0 -> one more commit; release/1.9 from 1.9.3, tagged 1.9.4 after 2.3.0."""
    repo = git_repo_factory()
    repo.tag("v1.9.3", annotated=True)
    repo.branch("release/1.9")
    repo.commits_n(2, "feature")
    repo.tag("v2.3.0", annotated=True)
    repo.commit("after 2.3.0")
    repo.checkout("release/1.9")
    repo.commit("fix", files={"fix.txt": "fixed\n"})
    repo.tag("v1.9.4")
    return repo


def test_backport_branch(git_repo_factory: GitRepoFactory) -> None:
    repo = _backport_repo(git_repo_factory)
    assert version(repo) == "1.9.4"
    state = read_state(repo.path)
    assert [r.tag for r in state.releases] == ["v2.3.0", "v1.9.4", "v1.9.3"]
    repo.commit("another fix", files={"fix.txt": "fixed again\n"})
    # 2.3.0 is the highest tag of the repository but not reachable: the base is 1.9.4
    assert version(repo) == f"1.9.5-dev.1+g{repo.head[:7]}"


def test_backport_merged_forward_keeps_the_higher_base(git_repo_factory: GitRepoFactory) -> None:
    repo = _backport_repo(git_repo_factory)
    repo.checkout("main")
    repo.merge("release/1.9")
    # git describe would pick the nearer 1.9.4; the version must sort above 2.3.0, which HEAD contains
    state = read_state(repo.path)
    assert state.base is not None and state.base.tag == "v2.3.0"
    assert version(repo) == f"2.3.1-dev.3+g{repo.head[:7]}"


def test_old_checkout_does_not_see_later_tags(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.tag("v1.0.0")
    first = repo.commit()
    repo.commit()
    repo.tag("v1.1.0")
    repo.checkout(first)
    assert version(repo) == f"1.0.1-dev.1+g{first[:7]}"


def test_dirty_tracked_changes_only(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.tag("v1.4.0")
    repo.write("untracked.txt", "not part of the commit\n")
    assert not read_state(repo.path).dirty
    assert version(repo) == "1.4.0"
    repo.write("history.txt", "edited\n")
    assert read_state(repo.path).dirty
    assert version(repo) == "1.4.0+dirty"
    repo.commit("x", files={"other.txt": "x\n"})
    repo.write("history.txt", "edited again\n")
    assert version(repo) == f"1.4.1-dev.1+g{repo.head[:7]}.dirty"


def test_commit_time_is_the_created_label(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    assert repo.time_of() == EPOCH + STEP
    assert commit_created(repo.path, repo.head) == "2023-11-14T22:14:20Z"
    assert read_state(repo.path).sha == repo.head
    with pytest.raises(GitError, match="cannot read the time"):
        commit_created(repo.path, "0" * 40)


def test_subdirectory_finds_the_repository(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.tag("v3.0.0")
    (repo.path / "deploy" / "images").mkdir(parents=True)
    assert str(describe(repo.path / "deploy" / "images")) == "3.0.0"


def test_not_a_repository_and_no_commits(tmp_path: Path, git_repo_factory: GitRepoFactory) -> None:
    with pytest.raises(GitError, match="not inside a git repository"):
        read_state(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="git init"):
        read_state(tmp_path / "plain")
    empty = git_repo_factory("empty", initial=False)
    with pytest.raises(GitError, match="no commits yet"):
        read_state(empty.path)


def test_shallow_clone_fails_with_the_fix_or_fetches_when_asked(
    git_repo_factory: GitRepoFactory, tmp_path: Path
) -> None:
    origin = git_repo_factory("origin")
    origin.tag("v1.0.0", annotated=True)
    origin.commits_n(3)
    origin.tag("v1.1.0")
    origin.commits_n(2)
    shallow = origin.clone(tmp_path / "shallow", depth=1)
    with pytest.raises(GitError, match=r"shallow clone.*fetch-depth: 0.*--fetch-tags") as failure:
        read_state(shallow.path)
    assert "\n" not in str(failure.value)
    state = read_state(shallow.path, fetch_tags=True)
    assert not state.shallow
    assert str(state.version) == f"1.1.1-dev.2+g{origin.head[:7]}"
    # and it stays fixed: the next run needs no fetch
    assert str(describe(shallow.path)) == str(state.version)


def test_clone_without_tags_fetches_them_when_asked(git_repo_factory: GitRepoFactory, tmp_path: Path) -> None:
    origin = git_repo_factory("origin")
    origin.tag("v5.0.0")
    origin.commit()
    clone = origin.clone(tmp_path / "notags", no_tags=True)
    assert str(describe(clone.path)).startswith("0.0.1-dev.2+")
    assert str(read_state(clone.path, fetch_tags=True).version).startswith("5.0.1-dev.1+")


def test_shallow_without_remote_cannot_be_fixed(git_repo_factory: GitRepoFactory, tmp_path: Path) -> None:
    origin = git_repo_factory("origin")
    origin.commits_n(2)
    shallow = origin.clone(tmp_path / "shallow", depth=1)
    shallow.git("remote", "remove", "origin")
    with pytest.raises(GitError, match="without a remote"):
        read_state(shallow.path, fetch_tags=True)


# --- context ---------------------------------------------------------------------------------------------


def test_local_context(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    context = ci_context(repo.path, sha=repo.head, environ={})
    assert (context.event, context.branch, context.default_branch) == ("local", "main", "main")
    repo.checkout("topic/x", create=True)
    context = ci_context(repo.path, sha=repo.head, environ={}, default_branch="trunk")
    assert (context.branch, context.default_branch) == ("topic/x", "trunk")
    repo.checkout(repo.head)
    assert ci_context(repo.path, sha=repo.head, environ={}).branch is None


def test_default_branch_from_origin_head_then_master(
    git_repo_factory: GitRepoFactory, tmp_path: Path
) -> None:
    origin = git_repo_factory("origin", branch="trunk")
    clone = origin.clone(tmp_path / "clone")
    with open_repo(clone.path) as repo:
        assert local_default_branch(repo) == "trunk"
    legacy = git_repo_factory("legacy", branch="master")
    with open_repo(legacy.path) as repo:
        assert local_default_branch(repo) == "master"
    other = git_repo_factory("other", branch="develop")
    with open_repo(other.path) as repo:
        assert local_default_branch(repo) is None


def _github(
    tmp_path: Path, event: str, ref: str, payload: object | None = None, **extra: str
) -> dict[str, str]:
    environ = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_REF": ref,
        "GITHUB_REF_NAME": ref.rsplit("/", 1)[-1],
        "GITHUB_SHA": "f" * 40,
        "GITHUB_REPOSITORY": "acme/hello",
        "GITHUB_SERVER_URL": "https://github.com",
        **extra,
    }
    if payload is not None:
        path = tmp_path / "event.json"
        path.write_text(json.dumps(payload))
        environ["GITHUB_EVENT_PATH"] = str(path)
    return environ


SHA = "1a2b3c4d5e6f7081920a1b2c3d4e5f6071829304"


@pytest.mark.parametrize(
    ("event", "ref", "payload", "extra", "expected"),
    [
        ("push", "refs/heads/main", {"repository": {"default_branch": "main"}}, {},
         ("push", "main", "main", None)),
        ("push", "refs/heads/feature/x", {"repository": {"default_branch": "main"}}, {},
         ("push", "feature/x", "main", None)),
        ("push", "refs/tags/v1.2.3", {"repository": {"default_branch": "main"}}, {},
         ("tag", None, "main", None)),
        ("release", "refs/tags/v1.2.3", None, {}, ("tag", None, None, None)),
        ("pull_request", "refs/pull/42/merge", {"number": 42, "pull_request": {"number": 42},
                                               "repository": {"default_branch": "trunk"}},
         {"GITHUB_HEAD_REF": "fix/bug"}, ("pull_request", "fix/bug", "trunk", 42)),
        ("pull_request_target", "refs/pull/7/merge", None, {}, ("pull_request", None, None, 7)),
        ("schedule", "refs/heads/main", {"repository": {"default_branch": "main"}}, {},
         ("schedule", "main", "main", None)),
        ("workflow_dispatch", "refs/heads/main", {"repository": {"default_branch": "main"}}, {},
         ("push", "main", "main", None)),
    ],
)  # fmt: skip
def test_github_context(
    tmp_path: Path,
    event: str,
    ref: str,
    payload: object,
    extra: dict[str, str],
    expected: tuple[str, str | None, str | None, int | None],
) -> None:
    environ = _github(tmp_path, event, ref, payload, **extra)
    context = github_context(environ, sha=SHA, default_branch=None)
    assert (context.event, context.branch, context.default_branch, context.pr_number) == expected
    assert context.sha == SHA


def test_github_pull_request_without_number_fails(tmp_path: Path) -> None:
    environ = _github(tmp_path, "pull_request", "refs/heads/odd")
    with pytest.raises(GitError, match="PR number"):
        github_context(environ, sha=SHA, default_branch=None)


def test_configured_default_branch_wins_over_github(tmp_path: Path, git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    environ = _github(tmp_path, "push", "refs/heads/trunk", {"repository": {"default_branch": "main"}})
    context = ci_context(repo.path, sha=repo.head, environ=environ, default_branch="trunk")
    assert (context.event, context.branch, context.default_branch) == ("push", "trunk", "trunk")


def test_unreadable_payload_falls_back_to_the_repository(
    tmp_path: Path, git_repo_factory: GitRepoFactory
) -> None:
    repo = git_repo_factory()
    environ = _github(tmp_path, "push", "refs/heads/main", GITHUB_EVENT_PATH=str(tmp_path / "missing.json"))
    context = ci_context(repo.path, sha=repo.head, environ=environ)
    assert context.default_branch == "main"


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("git@github.com:acme/hello.git", "https://github.com/acme/hello"),
        ("https://github.com/acme/hello.git", "https://github.com/acme/hello"),
        ("https://x-access-token:secret@github.com/acme/hello", "https://github.com/acme/hello"),
        ("ssh://git@gitlab.example:2222/group/sub/proj.git", "https://gitlab.example/group/sub/proj"),
        ("/srv/git/hello.git", ""),
        ("file:///srv/git/hello.git", ""),
        ("../hello", ""),
    ],
)
def test_https_url(remote: str, expected: str) -> None:
    assert _https_url(remote) == expected


def test_source_url(tmp_path: Path, git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    assert source_url(repo.path, {}) == ""
    repo.git("remote", "add", "origin", "git@github.com:acme/hello.git")
    assert source_url(repo.path, {}) == "https://github.com/acme/hello"
    environ = {"GITHUB_REPOSITORY": "acme/other", "GITHUB_SERVER_URL": "https://ghe.example/"}
    assert source_url(repo.path, environ) == "https://ghe.example/acme/other"


# --- issue 17, point 11 -------------------------------------------------------------------------------------


def test_a_tag_on_head_that_is_no_release_is_named(
    git_repo_factory: GitRepoFactory, caplog: pytest.LogCaptureFixture
) -> None:
    repo = git_repo_factory()
    repo.tag("release-1")
    state = read_state(repo.path)
    assert state.head_tags == ()
    assert any("'release-1' on HEAD is not a release tag" in r.getMessage() for r in caplog.records)


def test_a_failed_fetch_says_why_not_the_end_of_a_sentence(git_repo_factory: GitRepoFactory) -> None:
    repo = git_repo_factory()
    repo.git("remote", "add", "origin", str(repo.path.parent / "no-such-remote"))
    with pytest.raises(GitError) as raised:
        read_state(repo.path, fetch_tags=True)
    message = str(raised.value)
    assert "fatal:" in message and "does not appear to be a git repository" in message, message
    assert not message.rstrip().endswith(": and the repository exists.")
