"""The composite action and the reusable workflow, executed here the way the runner would execute them.

`CompositeRunner` reads action.yml and runs each `run:` step with bash (`bash --noprofile --norc -eo pipefail`,
as GitHub does), with the GITHUB_* variables of the event, a fresh GITHUB_OUTPUT per step, a shared GITHUB_ENV
and GITHUB_STEP_SUMMARY, and the `${{ }}` expressions the action uses evaluated from the test's inputs. It
knows only the expressions the action needs: anything else fails the test rather than being guessed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.distribution import RegistryClient
from pipeline.registry import Credentials
from tests.fixtures.gitrepos import GitRepo, GitRepoFactory
from tests.fixtures.registries import TestRegistry

REPO_ROOT = Path(__file__).resolve().parents[1]
ACTION = REPO_ROOT / "action.yml"
RELEASE_WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release.yml"
IMAGE = "acme/hello"
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


# --- a runner for composite actions -------------------------------------------------------------------


def parse_command_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines and `name<<DELIMITER` heredocs."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            while lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            index += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


@dataclass
class StepRun:
    id: str
    name: str
    outcome: str  # success, failure, skipped
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class ActionRun:
    steps: list[StepRun]
    outputs: dict[str, str]
    summary: str

    def step(self, step_id: str) -> StepRun:
        return next(step for step in self.steps if step.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.id} ({s.outcome})\n{s.stdout}\n{s.stderr}" for s in self.steps)

    @property
    def succeeded(self) -> bool:
        return all(step.outcome != "failure" for step in self.steps)


class CompositeRunner:
    def __init__(
        self,
        action: Path,
        *,
        workspace: Path,
        runner_temp: Path,
        event: Mapping[str, str],
        inputs: Mapping[str, str],
        step_env: Mapping[str, str] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.document: dict[str, Any] = yaml.safe_load(action.read_text())
        self.action_path = action.parent
        self.workspace = workspace
        self.runner_temp = runner_temp
        self.event = dict(event)
        self.step_env = dict(step_env or {})
        self.skip = skip
        declared = self.document.get("inputs", {})
        unknown = set(inputs) - set(declared)
        assert not unknown, f"inputs the action does not declare: {unknown}"
        self.inputs = {name: str(spec.get("default", "")) for name, spec in declared.items()}
        self.inputs.update(inputs)
        self.step_outputs: dict[str, dict[str, str]] = {}

    def evaluate(self, expression: str, *, failed: bool = False) -> str | bool:
        expression = expression.strip()
        if expression == "always()":
            return True
        if expression in ("success()", ""):
            return not failed
        match = re.fullmatch(r"(.+?)\s*==\s*'([^']*)'", expression)
        if match:
            return self.evaluate(match[1]) == match[2]
        if expression == "github.action_path":
            return str(self.action_path)
        if expression.startswith("inputs."):
            return self.inputs[expression.removeprefix("inputs.")]
        match = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression)
        if match:
            return self.step_outputs.get(match[1], {}).get(match[2], "")
        raise AssertionError(f"the test runner does not know the expression {expression!r}")

    def expand(self, text: str) -> str:
        return _EXPRESSION.sub(lambda m: str(self.evaluate(m[1])), text)

    def run(self) -> ActionRun:
        runs = self.document["runs"]
        assert runs["using"] == "composite"
        summary = self.runner_temp / "step_summary.md"
        env_file = self.runner_temp / "github_env"
        summary.write_text("")
        env_file.write_text("")
        exported: dict[str, str] = {}
        results: list[StepRun] = []
        failed = False
        for number, step in enumerate(runs["steps"]):
            step_id = step.get("id", f"__{number}")
            name = step.get("name", step_id)
            condition = step.get("if")
            wanted = (
                self.evaluate(_EXPRESSION.sub(r"\1", condition), failed=failed) if condition else not failed
            )
            if condition and failed and "always()" not in condition:
                wanted = False
            if not wanted or step_id in self.skip:
                results.append(StepRun(step_id, name, "skipped"))
                continue
            assert "run" in step, f"step {name}: only run steps are emulated"
            assert step.get("shell") == "bash", f"step {name}: composite run steps must name their shell"
            output_file = self.runner_temp / f"output_{number}"
            output_file.write_text("")
            environment = {
                **os.environ,
                **self.event,
                **self.step_env,
                **exported,
                "GITHUB_ACTIONS": "true",
                "CI": "true",
                "RUNNER_TEMP": str(self.runner_temp),
                "GITHUB_WORKSPACE": str(self.workspace),
                "GITHUB_ACTION_PATH": str(self.action_path),
                "GITHUB_OUTPUT": str(output_file),
                "GITHUB_ENV": str(env_file),
                "GITHUB_STEP_SUMMARY": str(summary),
                "COLUMNS": "200",
            }
            environment.update({key: self.expand(str(value)) for key, value in step.get("env", {}).items()})
            script = self.runner_temp / f"step_{number}.sh"
            script.write_text(self.expand(step["run"]))
            cwd = self.workspace / self.expand(step.get("working-directory", "."))
            process = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=cwd,
                env=environment,
                capture_output=True,
                text=True,
                check=False,
                timeout=1200,
            )
            outputs = parse_command_file(output_file.read_text())
            self.step_outputs[step_id] = outputs
            exported.update(parse_command_file(env_file.read_text()))
            outcome = "success" if process.returncode == 0 else "failure"
            failed = failed or outcome == "failure"
            results.append(StepRun(step_id, name, outcome, process.stdout, process.stderr, outputs))
        action_outputs = {
            name: self.expand(str(spec["value"])) for name, spec in self.document.get("outputs", {}).items()
        }
        return ActionRun(results, action_outputs, summary.read_text())


# --- the project the action releases ------------------------------------------------------------------


def project_config(base_image: str, registries: str) -> str:
    return f"""
[labels]
source = "https://example.invalid/acme/hello"
licenses = "MIT"

[[images]]
name = "{IMAGE}"
context = "hello"
build_args = {{ BASE = "{base_image}" }}
{registries}
"""


def make_project(git_repo_factory: GitRepoFactory, base_image: str, registries: str) -> GitRepo:
    repo = git_repo_factory("project", initial=False)
    shutil.copytree(REPO_ROOT / "Dockerfiles" / "hello", repo.path / "hello")
    files = {str(path.relative_to(repo.path)): path.read_text() for path in (repo.path / "hello").iterdir()}
    files["pipeline.toml"] = project_config(base_image, registries)
    repo.commit("hello", files=files)
    repo.tag("v1.2.3")
    return repo


def action_checkout(destination: Path) -> Path:
    """The action's files as `uses:` checks them out: what git tracks, no build output, no venvs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="session")
def installed_toolkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv that the action's own install step makes, run once per test session.

    The install step runs for real (a venv of its own, `pip install` of the action's checkout, dependencies
    from the package index), so the toolkit is importable in the runner venv only if the action installs it:
    nothing leaks in from the interpreter running the tests or from the machine's base Python.
    """
    root = tmp_path_factory.mktemp("action-install")
    checkout = action_checkout(root / "action")
    temp = root / "runner-temp"
    temp.mkdir()
    document = yaml.safe_load(ACTION.read_text())
    others = frozenset(step["id"] for step in document["runs"]["steps"] if step["id"] != "install")
    run = CompositeRunner(
        checkout / "action.yml",
        workspace=root,
        runner_temp=temp,
        event={},
        inputs={},
        step_env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        skip=others,
    ).run()
    assert run.step("install").outcome == "success", run.log[-4000:]
    venv = temp / "image-pipeline-venv"
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=root,  # not the repository: its own directory on sys.path would hide a failed install
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in probe.stdout, f"the toolkit was imported from outside the runner venv: {probe.stdout}"
    return venv


def runner_path(toolkit: Path) -> str:
    """PATH as a workflow job sees it after `pip install` of the toolkit: its interpreter first, and no trace
    of the venv running the tests, so a step that needs the toolkit finds it only where the job installed it."""
    ours = str(Path(sys.prefix) / "bin")
    kept = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and entry != ours]
    return os.pathsep.join([str(toolkit / "bin"), *kept])


def event_env(repo: GitRepo, tmp_path: Path, *, kind: str) -> dict[str, str]:
    payload: dict[str, Any] = {"repository": {"default_branch": "main", "full_name": "acme/hello"}}
    env = {
        "GITHUB_SHA": repo.head,
        "GITHUB_REPOSITORY": "acme/hello",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    if kind == "tag":
        env |= {
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_REF": "refs/tags/v1.2.3",
            "GITHUB_REF_NAME": "v1.2.3",
            "GITHUB_REF_TYPE": "tag",
        }
        payload["ref"] = "refs/tags/v1.2.3"
    elif kind == "branch":
        env |= {
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_REF_NAME": "main",
            "GITHUB_REF_TYPE": "branch",
        }
        payload["ref"] = "refs/heads/main"
    else:
        env |= {
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_REF": "refs/pull/7/merge",
            "GITHUB_REF_NAME": "7/merge",
            "GITHUB_HEAD_REF": "feature/greeting",
            "GITHUB_BASE_REF": "main",
        }
        payload |= {"number": 7, "pull_request": {"number": 7, "head": {"ref": "feature/greeting"}}}
    event_path = tmp_path / f"event-{kind}.json"
    event_path.write_text(json.dumps(payload))
    env["GITHUB_EVENT_PATH"] = str(event_path)
    return env


@pytest.fixture
def runner_temp(tmp_path: Path, installed_toolkit: Path) -> Iterator[Path]:
    """A job's RUNNER_TEMP after the action's install step: the session's installed venv at its fixed path."""
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    (temp / installed_toolkit.name).symlink_to(installed_toolkit, target_is_directory=True)
    yield temp


def hub_registry_input(auth_registry: TestRegistry) -> str:
    return f"""
[[registries]]
name = "hub"
url = "{auth_registry.url}/acme"
username_env = "TEST_HUB_USER"
password_env = "TEST_HUB_TOKEN"
"""


# --- the action ---------------------------------------------------------------------------------------


@pytest.mark.engine
def test_action_on_a_tag_push_releases_to_both_registries(
    tmp_path: Path,
    runner_temp: Path,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
) -> None:
    repo = make_project(
        git_repo_factory,
        base_image,
        f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/tagged"\n',
    )
    secrets = {"TEST_HUB_USER": auth_registry.username, "TEST_HUB_TOKEN": auth_registry.password}
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="tag"),
        inputs={"config": "pipeline.toml", "registries": hub_registry_input(auth_registry)},
        step_env=secrets,
        skip=frozenset({"install"}),
    ).run()
    assert run.succeeded, run.log[-6000:]
    assert [s.outcome for s in run.steps] == ["skipped", "success", "success", "success", "success"]

    # The password is masked before anything else runs, and the derived config is gone afterwards.
    assert f"::add-mask::{auth_registry.password}" in run.step("config").stdout.splitlines()
    assert not (repo.path / ".pipeline-action.toml").exists()
    assert "::group::Release" in run.step("release").stdout

    outputs = run.outputs
    assert outputs["version"] == "1.2.3"
    digest = outputs["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    tags = set(outputs["tags"].splitlines())
    for registry_repo in (f"{auth_registry.url}/acme/{IMAGE}", f"{open_registry.url}/tagged/{IMAGE}"):
        assert {f"{registry_repo}:{t}" for t in ("1.2.3", "1.2", "1", "latest")} <= tags, tags
    report = json.loads(outputs["json"])
    assert report["status"] == "published" and report["images"][0]["index_digest"] == digest
    assert Path(outputs["report"]).is_file()

    hub = RegistryClient(auth_registry.url, Credentials(auth_registry.username, auth_registry.password))
    private = RegistryClient(open_registry.url)
    for client, repository in ((hub, f"acme/{IMAGE}"), (private, f"tagged/{IMAGE}")):
        assert client.manifest_digest(repository, "1.2.3") == digest
        assert set(client.platform_digests(repository, digest)) == {"linux/amd64", "linux/arm64"}

    assert "### Release 1.2.3" in run.summary
    # One row per platform and registry, each with the platform's own digest and its smoke result.
    rows = [line for line in run.summary.splitlines() if line.startswith(f"| {IMAGE} |")]
    platform_digests = report["images"][0]["platforms"]
    assert len(rows) == 4 and all("passed" in row for row in rows), run.summary
    for platform, platform_digest in platform_digests.items():
        assert sum(platform in row and platform_digest in row for row in rows) == 2
    assert f"{open_registry.url}/tagged/{IMAGE}:latest" in run.summary
    assert auth_registry.password not in run.log.replace(f"::add-mask::{auth_registry.password}", "")


@pytest.mark.engine
def test_action_on_a_branch_push_tags_the_branch_not_latest(
    tmp_path: Path,
    runner_temp: Path,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
) -> None:
    repo = make_project(
        git_repo_factory,
        base_image,
        f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/branch"\n',
    )
    repo.commit("after the release")
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="branch"),
        # The hub is declared but not used: use-registries picks the private one.
        inputs={"registries": hub_registry_input(auth_registry), "use-registries": "private"},
        skip=frozenset({"install"}),
    ).run()
    assert run.succeeded, run.log[-6000:]
    version = run.outputs["version"]
    assert version.startswith("1.2.4-") and version != "1.2.3"
    tags = {ref.rsplit(":", 1)[1] for ref in run.outputs["tags"].splitlines()}
    assert {"main", "edge", f"sha-{repo.head[:7]}"} <= tags
    assert "latest" not in tags and "1.2.3" not in tags
    assert all(ref.startswith(f"{open_registry.url}/branch/") for ref in run.outputs["tags"].splitlines())
    digest = run.outputs["digest"]
    assert RegistryClient(open_registry.url).manifest_digest(f"branch/{IMAGE}", "edge") == digest
    assert set(RegistryClient(open_registry.url).platform_digests(f"branch/{IMAGE}", digest)) == {
        "linux/amd64",
        "linux/arm64",
    }
    assert json.loads(run.outputs["json"])["status"] == "published"
    assert f"Release {version}" in run.summary


@pytest.mark.engine
def test_action_on_a_pull_request_tags_pr_number(
    tmp_path: Path,
    runner_temp: Path,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    open_registry: TestRegistry,
) -> None:
    repo = make_project(
        git_repo_factory, base_image, f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/pr"\n'
    )
    repo.commit("the change under review")
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="pr"),
        inputs={"images": "hello"},
        skip=frozenset({"install"}),
    ).run()
    assert run.succeeded, run.log[-6000:]
    tags = {ref.rsplit(":", 1)[1] for ref in run.outputs["tags"].splitlines()}
    assert "pr-7" in tags and "latest" not in tags and "edge" not in tags
    assert RegistryClient(open_registry.url).manifest_digest(f"pr/{IMAGE}", "pr-7") == run.outputs["digest"]
    assert "pr-7" in run.summary


@pytest.mark.engine
def test_action_platforms_input_builds_only_those(
    tmp_path: Path,
    runner_temp: Path,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    open_registry: TestRegistry,
) -> None:
    repo = make_project(
        git_repo_factory, base_image, f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/one"\n'
    )
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="tag"),
        inputs={"platforms": "linux/amd64", "lint": "false"},
        skip=frozenset({"install"}),
    ).run()
    assert run.succeeded, run.log[-3000:]
    digest = run.outputs["digest"]
    assert set(RegistryClient(open_registry.url).platform_digests(f"one/{IMAGE}", digest)) == {"linux/amd64"}


def test_action_dry_run_outputs_the_plan_and_touches_nothing(
    tmp_path: Path, runner_temp: Path, git_repo_factory: GitRepoFactory
) -> None:
    repo = make_project(
        git_repo_factory, "example.invalid/base:1", '[[registries]]\nname = "nowhere"\nurl = "127.0.0.1:9"\n'
    )
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="tag"),
        inputs={"dry-run": "true", "lint": "false"},
        skip=frozenset({"install"}),
    ).run()
    assert run.succeeded, run.log[-4000:]
    assert run.step("lint").outcome == "skipped"
    assert run.outputs["version"] == "1.2.3"
    assert run.outputs["digest"] == ""
    assert "127.0.0.1:9/acme/hello:latest" in run.outputs["tags"].splitlines()
    assert json.loads(run.outputs["json"])["mode"] == "dry-run"
    assert "would build" in run.step("release").stdout
    assert "Dry run of release 1.2.3" in run.summary


def test_action_annotates_a_config_error_on_its_line(
    tmp_path: Path, runner_temp: Path, git_repo_factory: GitRepoFactory
) -> None:
    repo = git_repo_factory("broken", initial=False)
    repo.commit(
        "broken config",
        files={
            "pipeline.toml": '[labels]\nlicenses = "MIT"\n\n[[images]]\nname = "acme/hello"\ncontxt = "hello"\n'
        },
    )
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="branch"),
        inputs={},
        skip=frozenset({"install"}),
    ).run()
    config = run.step("config")
    assert config.outcome == "failure"
    (command,) = [line for line in config.stdout.splitlines() if line.startswith("::error")]
    assert command.startswith("::error file=pipeline.toml,line=6::")
    assert "images[0].contxt: unknown key" in command
    assert "::group::Config" in config.stdout and "::endgroup::" in config.stdout
    assert [s.outcome for s in run.steps][2:] == ["skipped", "skipped", "success"]


def test_action_annotates_an_input_error(
    tmp_path: Path, runner_temp: Path, git_repo_factory: GitRepoFactory
) -> None:
    repo = make_project(git_repo_factory, "example.invalid/base:1", "")
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="branch"),
        inputs={"use-registries": "dockerhub"},
        skip=frozenset({"install"}),
    ).run()
    config = run.step("config")
    assert config.outcome == "failure"
    assert any(
        line.startswith("::error") and "use-registries" in line and "dockerhub" in line
        for line in config.stdout.splitlines()
    ), config.stdout


# --- the reusable workflow's fan-out ------------------------------------------------------------------


def workflow_script(job: str, step_name_start: str) -> tuple[str, dict[str, str]]:
    document = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    for step in document["jobs"][job]["steps"]:
        if str(step.get("name", "")).startswith(step_name_start):
            return str(step["run"]), {k: str(v) for k, v in step.get("env", {}).items()}
    raise AssertionError(f"no step {step_name_start!r} in job {job}")


def expand_with(values: Mapping[str, str], text: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        assert match[1] in values, f"the test does not provide {match[1]!r}"
        return values[match[1]]

    return _EXPRESSION.sub(substitute, text)


def run_workflow_step(
    script: str,
    env: Mapping[str, str],
    *,
    cwd: Path,
    runner_temp: Path,
    values: Mapping[str, str],
    base_env: Mapping[str, str],
) -> subprocess.CompletedProcess[str]:

    def substitute(match: re.Match[str]) -> str:
        expression = match[1]
        assert expression in values, f"the test does not provide {expression!r}"
        return values[expression]

    environment = {
        **os.environ,
        **base_env,
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(runner_temp / "output"),
        **{key: _EXPRESSION.sub(substitute, value) for key, value in env.items()},
    }
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.mark.engine
def test_fan_out_builds_each_platform_separately_and_merges_one_index(
    tmp_path: Path,
    installed_toolkit: Path,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
) -> None:
    repo = make_project(
        git_repo_factory,
        base_image,
        f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/fanout"\n'
        + hub_registry_input(auth_registry).replace("/acme", "/fanout"),
    )
    secrets = {"TEST_HUB_USER": auth_registry.username, "TEST_HUB_TOKEN": auth_registry.password}
    build_script, build_env = workflow_script("build", "Build")
    merge_script, merge_env = workflow_script("merge", "Merge")
    assert "--push-by-digest" in build_script and "--digest-file" in build_script
    config = str(repo.path / "pipeline.toml")

    # Both platforms at once, each in its own process, as the matrix jobs would run on their own runners.
    runs = []
    temps = {}
    for platform in ("linux/amd64", "linux/arm64"):
        slug = f"acme-hello--{platform.replace('/', '-')}"
        temps[platform] = tmp_path / f"runner-{slug}"
        temps[platform].mkdir()
        values = {
            "matrix.image": IMAGE,
            "matrix.platform": platform,
            "matrix.slug": slug,
            "steps.config.outputs.config": config,
            "steps.config.outputs.source-config": config,
            **{
                f"secrets.{name}": ""
                for name in (
                    "DOCKERHUB_USERNAME",
                    "DOCKERHUB_TOKEN",
                    "PRIVATE_REGISTRY_USER",
                    "PRIVATE_REGISTRY_PASSWORD",
                )
            },
        }
        environment = {
            **os.environ,
            "PATH": runner_path(installed_toolkit),
            "RUNNER_TEMP": str(temps[platform]),
            "GITHUB_ACTIONS": "true",
            **secrets,
        }
        env = {key: expand_with(values, value) for key, value in build_env.items()}
        runs.append(
            subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", build_script],
                cwd=repo.path,
                env={**environment, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for process in runs:
        output, _ = process.communicate(timeout=900)
        assert process.returncode == 0, output[-4000:]

    # The artifacts, as download-artifact with merge-multiple leaves them: every digest file in one folder.
    merge_temp = tmp_path / "runner-merge"
    (merge_temp / "digests").mkdir(parents=True)
    digest_files = []
    for platform, temp in temps.items():
        (digest_file,) = (temp / "digests").glob("*.json")
        recorded = json.loads(digest_file.read_text())
        assert list(recorded["platforms"]) == [platform]
        digest_files.append(recorded)
        shutil.copy(digest_file, merge_temp / "digests" / digest_file.name)

    values = {
        "matrix.image": IMAGE,
        "matrix.image_slug": "acme-hello",
        "steps.config.outputs.config": config,
        "steps.config.outputs.source-config": config,
        **{
            f"secrets.{name}": ""
            for name in (
                "DOCKERHUB_USERNAME",
                "DOCKERHUB_TOKEN",
                "PRIVATE_REGISTRY_USER",
                "PRIVATE_REGISTRY_PASSWORD",
            )
        },
    }
    result = run_workflow_step(
        merge_script,
        merge_env,
        cwd=repo.path,
        runner_temp=merge_temp,
        values=values,
        base_env={**secrets, "PATH": runner_path(installed_toolkit)},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    merged = json.loads((merge_temp / "merged" / "acme-hello.json").read_text())
    index = merged["index_digest"]

    expected = {
        platform: recorded["platforms"][platform]
        for platform, recorded in zip(temps, digest_files, strict=True)
    }
    private = RegistryClient(open_registry.url)
    hub = RegistryClient(auth_registry.url, Credentials(auth_registry.username, auth_registry.password))
    for client, repository in ((private, f"fanout/{IMAGE}"), (hub, f"fanout/{IMAGE}")):
        assert client.platform_digests(repository, index) == expected
    # Pushed by digest only: the fan-out moves no tag; promotion comes after the smoke tests.
    assert [tag for tag in private.tags(f"fanout/{IMAGE}") if not tag.startswith("buildcache")] == []
