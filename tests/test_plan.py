"""The plan end to end: a real repository, its config, registries and (simulated) CI contexts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pipeline.config import LoadedConfig, RegistryConfig, load_config
from pipeline.errors import ConfigError, GitError
from pipeline.plan import ImagePlan, Plan, make_plan, register, require_clean
from tests.fixtures.gitrepos import GitRepo, GitRepoFactory

CONFIG = """
[[images]]
name = "acme/hello"
description = "Says hello"
platforms = ["linux/amd64", "linux/arm64"]

[[images]]
name = "acme/hello-alpine"
platforms = ["linux/amd64"]
tags = { suffix = "-alpine", raw = ["stable-alpine"] }

[[registries]]
name = "one"
url = "127.0.0.1:5001"

[[registries]]
name = "two"
url = "registry.example/team"

[labels]
licenses = "MIT"
source = "https://github.com/acme/hello"
"""
OCI = "org.opencontainers.image."


def _project(git_repo_factory: GitRepoFactory, config: str = CONFIG) -> tuple[GitRepo, LoadedConfig]:
    repo = git_repo_factory()
    repo.commit("config", files={"pipeline.toml": config})
    return repo, load_config(repo.path / "pipeline.toml")


def _backport(repo: GitRepo) -> None:
    """main: 1.9.3 -> 2.3.0; release/1.9 from 1.9.3 gets 1.9.4, tagged after 2.3.0; HEAD at 1.9.4."""
    repo.tag("v1.9.3", annotated=True)
    repo.branch("release/1.9")
    repo.commit("feature")
    repo.tag("v2.3.0", annotated=True)
    repo.checkout("release/1.9")
    repo.commit("fix", files={"fix.txt": "fixed\n"})
    repo.tag("v1.9.4")


def test_backport_release_never_moves_latest(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    _backport(repo)
    plan = make_plan(config, environ={})
    assert plan.version == "1.9.4"
    hello = plan.image("acme/hello")
    assert "latest" not in hello.tags
    assert hello.tags == ("1.9.4", "1.9", "1", "release-1.9", f"sha-{repo.head[:7]}")
    alpine = plan.image("hello-alpine")
    assert alpine.tags == (
        "1.9.4-alpine", "1.9-alpine", "1-alpine", "release-1.9-alpine", f"sha-{repo.head[:7]}-alpine",
        "stable-alpine",
    )  # fmt: skip
    repo.checkout("v2.3.0")
    plan = make_plan(config, environ={})
    assert plan.version == "2.3.0"
    assert plan.image("acme/hello").tags[:4] == ("2.3.0", "2.3", "2", "latest")


def test_github_tag_push_of_the_backport(git_repo_factory: GitRepoFactory, tmp_path: Path) -> None:
    repo, config = _project(git_repo_factory)
    _backport(repo)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repository": {"default_branch": "main"}}))
    environ = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REF": "refs/tags/v1.9.4",
        "GITHUB_REF_NAME": "v1.9.4",
        "GITHUB_SHA": repo.head,
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": "acme/hello",
    }
    plan = make_plan(config, environ=environ)
    assert plan.event == "tag"
    assert plan.image("acme/hello").tags == ("1.9.4", "1.9", "1", f"sha-{repo.head[:7]}")


def test_github_pull_request(git_repo_factory: GitRepoFactory, tmp_path: Path) -> None:
    repo, config = _project(git_repo_factory)
    repo.tag("v1.0.0")
    repo.checkout("fix/thing", create=True)
    repo.commit()
    repo.checkout("main")
    merge = repo.merge("fix/thing", "Merge fix/thing into main (what GitHub checks out for a PR)")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 17, "pull_request": {"number": 17}}))
    environ = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_REF": "refs/pull/17/merge",
        "GITHUB_HEAD_REF": "fix/thing",
        "GITHUB_SHA": merge,
        "GITHUB_EVENT_PATH": str(event),
    }
    plan = make_plan(config, environ=environ)
    assert plan.version == f"1.0.1-dev.2+g{merge[:7]}"
    assert plan.image("acme/hello").tags == (f"1.0.1-dev.2_g{merge[:7]}", "pr-17", f"sha-{merge[:7]}")


def test_schedule_is_nightly(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    environ = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "schedule", "GITHUB_REF": "refs/heads/main"}
    tags = make_plan(config, environ=environ).image("acme/hello").tags
    assert tags == (f"0.0.1-dev.2_g{repo.head[:7]}", "nightly", f"sha-{repo.head[:7]}")


def test_default_branch_build_is_edge(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    repo.tag("v0.4.0")
    repo.commit()
    plan = make_plan(config, environ={})
    assert plan.event == "local"
    assert plan.image("acme/hello").tags == (
        f"0.4.1-dev.1_g{repo.head[:7]}",
        "main",
        "edge",
        f"sha-{repo.head[:7]}",
    )


def test_references_labels_and_json(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    repo.tag("v2.0.0", annotated=True)
    plan = make_plan(config, environ={})
    hello = plan.image("acme/hello")
    one, two = plan.registries
    assert hello.references(one)[:2] == ["127.0.0.1:5001/acme/hello:2.0.0", "127.0.0.1:5001/acme/hello:2.0"]
    assert hello.references(two)[0] == "registry.example/team/acme/hello:2.0.0"
    assert hello.labels[f"{OCI}version"] == "2.0.0"
    assert hello.labels[f"{OCI}revision"] == repo.head == plan.revision
    assert hello.labels[f"{OCI}created"] == plan.created == "2023-11-14T22:15:20Z"  # the commit, not the tag
    assert hello.labels[f"{OCI}description"] == "Says hello"
    assert hello.labels[f"{OCI}licenses"] == "MIT"
    assert hello.labels[f"{OCI}title"] == "hello"
    assert hello.annotations == hello.labels

    document = plan.to_json()
    json.dumps(document)
    assert document["version"] == "2.0.0"
    first = document["images"][0]
    assert first["name"] == "acme/hello"
    assert first["platforms"] == ["linux/amd64", "linux/arm64"]
    assert first["tags"] == hello.references(one) + hello.references(two)
    assert first["labels"] == hello.labels


def test_same_commit_same_plan(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    repo.tag("v1.0.0")
    assert make_plan(config, environ={}) == make_plan(config, environ={})


def test_registries_default_to_the_local_one(git_repo_factory: GitRepoFactory) -> None:
    _, config = _project(git_repo_factory, '[[images]]\nname = "hello"\n')
    plan = make_plan(config, environ={})
    assert [r.url for r in plan.registries] == ["127.0.0.1:5000"]
    assert plan.to_json()["images"][0]["tags"][0].startswith("127.0.0.1:5000/hello:0.0.1-dev.2_g")
    other = make_plan(config, registries=[RegistryConfig(name="x", url="ghcr.io/acme")], environ={})
    assert other.to_json()["images"][0]["tags"][0].startswith("ghcr.io/acme/hello:")


def test_dirty_tree_is_refused_unless_allowed(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    repo.tag("v1.0.0")
    repo.write("history.txt", "uncommitted\n")
    plan = make_plan(config, environ={})
    assert plan.dirty
    assert plan.version == "1.0.0+dirty"
    assert "latest" not in plan.image("acme/hello").tags
    assert plan.image("acme/hello").tags[0] == "1.0.0_dirty"
    with pytest.raises(GitError, match="--allow-dirty") as failure:
        make_plan(config, allow_dirty=False, environ={})
    assert "\n" not in str(failure.value)
    with pytest.raises(GitError, match="uncommitted"):
        require_clean(plan)


def test_shallow_clone_plan_fails_with_the_fix(git_repo_factory: GitRepoFactory, tmp_path: Path) -> None:
    origin, _ = _project(git_repo_factory)
    origin.tag("v1.0.0")
    origin.commit()
    clone = origin.clone(tmp_path / "ci", depth=1)
    config = load_config(clone.path / "pipeline.toml")
    with pytest.raises(GitError, match="fetch-depth: 0"):
        make_plan(config, environ={})
    assert make_plan(config, fetch_tags=True, environ={}).version.startswith("1.0.1-dev.1+")


def test_custom_tag_prefix_and_kinds(git_repo_factory: GitRepoFactory) -> None:
    config_text = """
[version]
tag_prefix = "release-"
default_branch = "main"

[[images]]
name = "hello"
tags = { kinds = ["semver", "latest"] }
"""
    repo, config = _project(git_repo_factory, config_text)
    repo.tag("release-3.1.0")
    repo.tag("v9.0.0")  # not a release under this prefix
    assert make_plan(config, environ={}).image("hello").tags == ("3.1.0", "latest")


def test_label_contradicting_git_is_a_config_error(git_repo_factory: GitRepoFactory) -> None:
    config_text = '[[images]]\nname = "hello"\nlabels = { "org.opencontainers.image.revision" = "abc" }\n'
    _, config = _project(git_repo_factory, config_text)
    with pytest.raises(ConfigError, match="computed from git"):
        make_plan(config, environ={})


def test_source_label_from_the_origin_remote(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory, '[[images]]\nname = "hello"\n')
    repo.git("remote", "add", "origin", "https://github.com/acme/hello.git")
    labels = make_plan(config, environ={}).image("hello").labels
    assert labels[f"{OCI}source"] == labels[f"{OCI}url"] == "https://github.com/acme/hello"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_plan_command_json_and_table(
    git_repo_factory: GitRepoFactory, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    repo, config = _project(git_repo_factory)
    repo.tag("v1.2.3")
    args = _parse(["--config", str(config.path), "plan", "--json"])
    assert args.handler(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == "1.2.3"
    assert {image["name"] for image in document["images"]} == {"acme/hello", "acme/hello-alpine"}
    assert "127.0.0.1:5001/acme/hello:latest" in document["images"][0]["tags"]
    assert "registry.example/team/acme/hello-alpine:latest-alpine" in document["images"][1]["tags"]

    monkeypatch.setenv("COLUMNS", "200")  # wide enough that rich folds nothing
    args = _parse(["--config", str(config.path), "plan"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:5001/acme/hello:1.2.3" in out and "org.opencontainers.image.version" in out


def test_cli_entry_point(
    git_repo_factory: GitRepoFactory, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import main

    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    repo, config = _project(git_repo_factory)
    repo.tag("v1.2.3")
    assert main(["--config", str(config.path), "plan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1.2.3"
    repo.write("history.txt", "dirty\n")
    assert main(["--config", str(config.path), "plan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dirty"] is True


def test_plan_types() -> None:
    image = ImagePlan("hello", ("linux/amd64",), "1.0.0", ("1.0.0", "latest"), {}, {})
    registry = RegistryConfig(name="r", url="localhost:5000")
    plan = Plan("1.0.0", "a" * 40, "2023-11-14T22:14:20Z", False, "local", (image,), (registry,))
    assert image.references(registry) == ["localhost:5000/hello:1.0.0", "localhost:5000/hello:latest"]
    assert plan.to_json()["images"][0]["tags"] == image.references(registry)
    with pytest.raises(KeyError):
        plan.image("missing")


# --- issue 17, points 4 and 5: a dirty build names no commit, and untracked context files make it dirty -------


def test_a_dirty_build_takes_no_commit_or_branch_tag(git_repo_factory: GitRepoFactory) -> None:
    repo, config = _project(git_repo_factory)
    repo.tag("v1.0.0")
    repo.commit("after the release")
    clean = make_plan(config, environ={}).image("acme/hello").tags
    assert any(t.startswith("sha-") for t in clean) and "main" in clean and "edge" in clean
    repo.write("history.txt", "uncommitted\n")
    dirty = make_plan(config, environ={}).image("acme/hello").tags
    assert len(dirty) == 1 and dirty[0].endswith(".dirty"), dirty


DOCKER_PROJECT = """
[[images]]
name = "acme/app"
context = "app"
"""


def test_untracked_and_ignored_files_in_the_context_make_the_tree_dirty(
    git_repo_factory: GitRepoFactory,
) -> None:
    repo = git_repo_factory()
    repo.commit(
        "app",
        files={
            "pipeline.toml": DOCKER_PROJECT,
            "app/Dockerfile": "FROM scratch\nCOPY . /app/\n",
            "app/.dockerignore": "*.log\n",
            ".gitignore": "*.env\n*.log\n",
        },
    )
    repo.tag("v1.0.0")
    config = load_config(repo.path / "pipeline.toml")
    repo.write("app/build.log", "excluded by .dockerignore: not sent\n")
    repo.write("outside.txt", "not in the context\n")
    assert not make_plan(config, environ={}).dirty
    repo.write("app/local.env", "SECRET=1\n")  # git-ignored, but buildx sends it
    plan = make_plan(config, environ={})
    assert plan.dirty and plan.context_files == ("app/local.env",)
    assert plan.version == "1.0.0+dirty" and "latest" not in plan.image("acme/app").tags
    with pytest.raises(GitError, match=r"untracked or git-ignored .*app/local\.env.*\.dockerignore"):
        make_plan(config, allow_dirty=False, environ={})
    # What the pipeline writes itself (the release report) does not count.
    (repo.path / "app/local.env").unlink()
    repo.write("app/release.json", "{}\n")
    assert not make_plan(config, environ={}, own_files=[repo.path / "app/release.json"]).dirty


def test_the_repositorys_examples_expect_the_labels_their_plan_gives_them() -> None:
    # The quick start's release smoke-tests the examples against labels derived from their names; a rename in
    # pipeline.toml that their smoke files did not follow failed the gate (and only the quick start saw it).
    from pipeline.structure import load_suite

    repo_root = Path(__file__).resolve().parents[1]
    config = load_config(repo_root / "pipeline.toml")
    plan = make_plan(config, environ={})
    checked = 0
    for image in config.pipeline.images:
        smoke = config.smoke_path(image)
        suite = load_suite(smoke) if smoke is not None else None
        if suite is None or suite.metadata_test is None:
            continue
        planned = plan.image(image.name).labels
        for label in suite.metadata_test.labels:
            computed = label.key.rsplit(".", 1)[-1] in ("version", "revision", "created")
            if label.key.startswith("org.opencontainers.image.") and not label.is_regex and not computed:
                assert planned.get(label.key) == label.value, f"{smoke}: {label.key}"
                checked += 1
    assert checked >= 1
