"""The side-effect edge of versioning: what the repository and the CI say about the commit being built.

Everything here reads git (through gitpython) or the environment and returns plain facts; the rules that
turn them into versions and tags live in the pure `pipeline.version` and `pipeline.tags`.

Speed matters (see `bench/bench_version.py`): a few git processes, none of which walks the whole history
in the common case. HEAD and the tags come from one `show-ref` (it reuses the peeled ids packed refs store).
The base of an untagged commit is the highest release, in semver's order, reachable from HEAD: the highest
release tag of the repository is tried first with one `rev-list --left-right --count`, which answers both
"is it an ancestor?" and "how far?" by walking only the commits between the two. Only when it is not an
ancestor (a backport branch, an old checkout) does one full `rev-list HEAD` walk tell which tags are
reachable. git's own nearest-tag choice (`git describe`) is not used: it orders by distance, and a
backport merged forward would make `1.9.5-dev` of a commit that already contains `2.3.0`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git
import semver

from pipeline.errors import GitError
from pipeline.tags import CIContext, Event
from pipeline.version import DEFAULT_TAG_PREFIX, Release, compute_version, parse_release_tags

log = logging.getLogger(__name__)

SHALLOW_FIX = "check out with `fetch-depth: 0` (actions/checkout) or pass --fetch-tags"


@dataclass(frozen=True)
class GitState:
    """The facts about HEAD that its version depends on."""

    root: Path
    sha: str
    dirty: bool
    shallow: bool
    releases: tuple[Release, ...]
    """Every release tag of the repository, reachable or not, highest first."""
    head_tags: tuple[Release, ...]
    base: Release | None
    """The highest release reachable from HEAD, when HEAD itself carries none."""
    distance: int
    """Commits reachable from HEAD and not from `base` (0 when HEAD is tagged)."""

    @property
    def version(self) -> semver.Version:
        return compute_version(
            head_tags=self.head_tags, base=self.base, distance=self.distance, sha=self.sha, dirty=self.dirty
        )


def open_repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise GitError(
            f"{path} is not inside a git repository; versions come from git, run `git init`"
        ) from None


def _git_failure(error: git.GitCommandError) -> str:
    """git's own reason: its `fatal:`/`error:` line, else all it said on one line (never a cut sentence such
    as the last line of "Please make sure you have the correct access rights / and the repository exists.")."""
    stderr = str(error.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))]
    if reasons:
        return "; ".join(reasons)
    return " ".join(lines) if lines else f"git exited with {error.status}"


def _is_shallow(repo: git.Repo) -> bool:
    # What `git rev-parse --is-shallow-repository` checks, without spending a process on it.
    return (Path(repo.common_dir) / "shallow").is_file()


def _fetch_tags(repo: git.Repo, *, shallow: bool) -> None:
    remotes = [remote.name for remote in repo.remotes]
    if not remotes:
        if shallow:
            raise GitError(
                f"{repo.working_dir}: shallow clone without a remote to fetch history and tags from"
            )
        log.warning("no git remote: cannot fetch tags, using the local ones")
        return
    remote = "origin" if "origin" in remotes else remotes[0]
    # Tags alone do not make them reachable in a shallow clone: the history between them is needed too.
    args = ["--unshallow", "--tags", remote] if shallow else ["--tags", remote]
    log.info("fetching %s from %s", "history and tags" if shallow else "tags", remote)
    try:
        repo.git.fetch(*args)
    except git.GitCommandError as error:
        raise GitError(f"git fetch {' '.join(args)} failed: {_git_failure(error)}") from None


# One line per ref, followed for annotated tags by `<commit> refs/tags/NAME^{}`: the later line wins.
_SHOW_REF_LINE = re.compile(r"^([0-9a-f]+) (HEAD|refs/tags/.+?)(?:\^\{\})?$", re.MULTILINE)


def _head_and_tags(repo: git.Repo) -> tuple[str, dict[str, str]]:
    """HEAD's commit, and tag name -> the commit it names (annotated tags peeled), from one process."""
    output = repo.git.show_ref("--head", "--tags", "--dereference", with_exceptions=False)
    commits = {name.removeprefix("refs/tags/"): sha for sha, name in _SHOW_REF_LINE.findall(output)}
    head = commits.pop("HEAD", None)
    if head is None:
        raise GitError(f"{repo.working_dir}: the repository has no commits yet; commit before planning")
    return head, commits


def _count(repo: git.Repo, *revisions: str) -> int:
    return int(repo.git.rev_list("--count", *revisions, "--"))


def _nearest(
    repo: git.Repo, releases: list[Release], commits: Mapping[str, str]
) -> tuple[Release | None, int]:
    if not releases:
        return None, _count(repo, "HEAD")
    top = releases[0]
    try:
        only_in_top, only_in_head = repo.git.rev_list(
            "--count", "--left-right", f"{commits[top.tag]}...HEAD", "--"
        ).split()
        if only_in_top == "0":
            return top, int(only_in_head)
    except git.GitCommandError as error:  # a tag naming a tree or blob: not a candidate, look further
        log.debug("cannot compare %s with HEAD: %s", top.tag, _git_failure(error))
    # One walk of everything HEAD reaches; `for-each-ref --merged` walks the same but costs twice as much.
    reachable = set(repo.git.rev_list("HEAD", "--").split())
    for release in releases[1:]:
        if commits[release.tag] in reachable:
            return release, _count(repo, f"{commits[release.tag]}..HEAD")
    return None, len(reachable)


def _is_dirty(repo: git.Repo) -> bool:
    # Tracked files only, as `git describe --dirty` and setuptools-scm do: untracked files are usually
    # build output, and counting them would make every CI workspace "dirty".
    return bool(repo.git.status("--porcelain", "--untracked-files=no"))


def read_state(path: Path, *, tag_prefix: str = DEFAULT_TAG_PREFIX, fetch_tags: bool = False) -> GitState:
    """Read the facts about HEAD of the repository containing `path`.

    A shallow clone fails (its tags and history are incomplete, so `latest` could move to the wrong
    release and the version fall back to 0.0.1-dev) unless `fetch_tags`, which unshallows it and fetches
    every tag first.
    """
    repo = open_repo(path)
    try:
        shallow = _is_shallow(repo)
        if fetch_tags:
            _fetch_tags(repo, shallow=shallow)
            shallow = _is_shallow(repo)
        if shallow:
            raise GitError(
                f"{repo.working_dir} is a shallow clone: its tags and history are incomplete, so the version "
                f"and `latest` would be wrong; {SHALLOW_FIX}"
            )
        # Independent reads, side by side: most of their cost is starting a process, not git's work.
        with ThreadPoolExecutor(max_workers=2) as pool:
            dirty = pool.submit(_is_dirty, repo)
            sha, commits = _head_and_tags(repo)
            releases = parse_release_tags(commits, tag_prefix)
            head_tags = tuple(release for release in releases if commits[release.tag] == sha)
            _warn_ignored_head_tags(commits, sha, releases, tag_prefix)
            base, distance = (None, 0) if head_tags else _nearest(repo, releases, commits)
            is_dirty = dirty.result()
        return GitState(
            root=Path(repo.working_dir),
            sha=sha,
            dirty=is_dirty,
            shallow=shallow,
            releases=tuple(releases),
            head_tags=head_tags,
            base=base,
            distance=distance,
        )
    except git.GitCommandError as error:
        raise GitError(
            f"{repo.working_dir}: git {error.command[1:2]} failed: {_git_failure(error)}"
        ) from None
    finally:
        repo.close()


def _warn_ignored_head_tags(
    commits: Mapping[str, str], sha: str, releases: list[Release], tag_prefix: str
) -> None:
    """Say so when HEAD carries a tag that is not a release tag (`release-1`): silently ignoring it would
    leave the user wondering why the version is a dev version."""
    release_names = {release.tag for release in releases}
    for name, commit in sorted(commits.items()):
        if commit == sha and name not in release_names:
            log.warning(
                "tag %r on HEAD is not a release tag (%sX.Y.Z or X.Y.Z, semver); it is ignored for the version",
                name,
                tag_prefix,
            )


def untracked_in(path: Path, directory: Path) -> list[str]:
    """Untracked and git-ignored files under `directory` (relative to it): buildx sends them with the
    context even though `git status` calls the tree clean."""
    repo = open_repo(path)
    root = Path(repo.working_dir).resolve()
    if not directory.resolve().is_relative_to(root):
        repo.close()
        return []  # a context outside the repository: git knows nothing about it
    try:
        output = repo.git.ls_files("--others", "-z", "--", str(directory))
    except git.GitCommandError as error:
        raise GitError(f"{repo.working_dir}: git ls-files failed: {_git_failure(error)}") from None
    finally:
        repo.close()
    found = []
    for name in output.split("\0"):
        if name:
            found.append((root / name).resolve().relative_to(directory.resolve()).as_posix())
    return found


def describe(path: Path, *, tag_prefix: str = DEFAULT_TAG_PREFIX) -> semver.Version:
    """The version of HEAD of the repository containing `path`."""
    return read_state(path, tag_prefix=tag_prefix).version


def commit_created(path: Path, sha: str) -> str:
    """The commit time of `sha` as ISO 8601 UTC, for `created`: rebuilding a commit gives the same labels.

    The committer time, not the author time: a rebased or cherry-picked commit was made when it was applied.
    Not part of `read_state`, which computes only what the version needs.
    """
    repo = open_repo(path)
    try:
        timestamp = int(repo.git.show("-s", "--format=%ct", sha, "--"))
    except (git.GitCommandError, ValueError):
        raise GitError(
            f"{repo.working_dir}: cannot read the time of commit {sha}; is it in this clone?"
        ) from None
    finally:
        repo.close()
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the CI context --------------------------------------------------------------------------------------


def _local_branch(repo: git.Repo) -> str | None:
    try:
        return None if repo.head.is_detached else repo.active_branch.name
    except (TypeError, ValueError):
        return None


def local_default_branch(repo: git.Repo) -> str | None:
    """origin/HEAD when the clone recorded it, else `main` or `master` if one exists."""
    try:
        target = git.SymbolicReference(repo, "refs/remotes/origin/HEAD").reference.path
        return str(target).removeprefix("refs/remotes/origin/")
    except (TypeError, ValueError, OSError):
        pass
    names = {head.name for head in repo.heads}
    names |= {ref.remote_head for remote in repo.remotes for ref in remote.refs}
    for candidate in ("main", "master"):
        if candidate in names:
            return candidate
    return None


def _event_payload(environ: Mapping[str, str]) -> dict[str, Any]:
    path = environ.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        log.warning("cannot read the GitHub event payload %s: %s", path, error)
        return {}
    return payload if isinstance(payload, dict) else {}


def _pr_number(payload: Mapping[str, Any], ref: str) -> int | None:
    pull_request = payload.get("pull_request")
    if isinstance(pull_request, dict) and isinstance(pull_request.get("number"), int):
        return int(pull_request["number"])
    if isinstance(payload.get("number"), int):
        return int(payload["number"])
    match = re.fullmatch(r"refs/pull/([0-9]+)/(?:merge|head)", ref)
    return int(match[1]) if match else None


def in_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true" and bool(environ.get("GITHUB_EVENT_NAME"))


def github_context(
    environ: Mapping[str, str], *, sha: str, default_branch: str | None, repo: git.Repo | None = None
) -> CIContext:
    """The context of a GitHub Actions run. `sha` is the checked-out HEAD: the commit actually built."""
    event_name = environ["GITHUB_EVENT_NAME"]
    ref = environ.get("GITHUB_REF", "")
    payload = _event_payload(environ)
    github_sha = environ.get("GITHUB_SHA", "")
    if github_sha and github_sha != sha:
        log.warning(
            "GITHUB_SHA %s is not the checked-out HEAD %s; tagging what is checked out", github_sha, sha
        )
    repository = payload.get("repository")
    if (
        default_branch is None
        and isinstance(repository, dict)
        and isinstance(repository.get("default_branch"), str)
    ):
        default_branch = str(repository["default_branch"])
    if default_branch is None and repo is not None:
        default_branch = local_default_branch(repo)
    event: Event
    branch: str | None = None
    pr_number: int | None = None
    if event_name in ("pull_request", "pull_request_target"):
        event = "pull_request"
        pr_number = _pr_number(payload, ref)
        if pr_number is None:
            raise GitError(
                f"GitHub {event_name} event without a PR number (GITHUB_EVENT_PATH unreadable and GITHUB_REF "
                f"{ref!r} is not refs/pull/N/merge); run the job on a pull_request event"
            )
        branch = environ.get("GITHUB_HEAD_REF") or None
    elif event_name == "schedule":
        event = "schedule"
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    elif ref.startswith("refs/tags/"):
        event = "tag"
    else:
        # push, workflow_dispatch, merge_group...: a build of whatever branch the ref names.
        event = "push"
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    return CIContext(event=event, sha=sha, branch=branch, default_branch=default_branch, pr_number=pr_number)


def ci_context(
    path: Path, *, sha: str, environ: Mapping[str, str], default_branch: str | None = None
) -> CIContext:
    """GitHub Actions' context when running there, else a local one from the repository.

    `default_branch` (the config's `version.default_branch`) wins over what GitHub or the clone say.
    """
    repo = open_repo(path)
    try:
        if in_github_actions(environ):
            return github_context(environ, sha=sha, default_branch=default_branch, repo=repo)
        return CIContext(
            event="local",
            sha=sha,
            branch=_local_branch(repo),
            default_branch=default_branch or local_default_branch(repo),
        )
    finally:
        repo.close()


_SCP_LIKE = re.compile(r"(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)")


def _https_url(remote_url: str) -> str:
    """A browsable https URL for a remote, without credentials; "" for local paths and unknown forms."""
    url = remote_url.strip()
    match = re.fullmatch(r"(?:https?|ssh|git)://(?:[^@/]*@)?(?P<host>[^/:]+)(?::[0-9]+)?/(?P<path>.+)", url)
    if match is None and "://" not in url and not url.startswith(("/", ".")):
        match = _SCP_LIKE.fullmatch(url)
    if match is None:
        return ""
    return f"https://{match['host']}/{match['path'].removesuffix('/').removesuffix('.git')}"


def source_url(path: Path, environ: Mapping[str, str]) -> str:
    """Where the source lives, for the `source`/`url` labels when the config does not say."""
    if environ.get("GITHUB_REPOSITORY"):
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        return f"{server}/{environ['GITHUB_REPOSITORY']}"
    repo = open_repo(path)
    try:
        remotes = {remote.name: remote for remote in repo.remotes}
        remote = remotes.get("origin") or next(iter(remotes.values()), None)
        if remote is None:
            return ""
        try:
            return _https_url(remote.url)
        except (git.GitCommandError, ValueError):
            return ""
    finally:
        repo.close()
