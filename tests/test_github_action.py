"""The composite action and the reusable workflow, executed here the way the runner would execute them.

`CompositeRunner` reads action.yml and runs each `run:` step with bash (`bash --noprofile --norc -eo pipefail`,
as GitHub does), with the GITHUB_* variables of the event, a fresh GITHUB_OUTPUT per step, a shared GITHUB_ENV
and GITHUB_STEP_SUMMARY, and the `${{ }}` expressions the action uses evaluated from the test's inputs. It
knows only the expressions the action needs: anything else fails the test rather than being guessed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.build import cache_settings
from pipeline.config import BuildConfig, ImageConfig
from pipeline.distribution import RegistryClient
from pipeline.registry import Credentials
from pipeline.sign import ensure_cosign, signature_tag
from tests.fixtures.cosign import generate_key_pair
from tests.fixtures.gitrepos import GitRepo, GitRepoFactory
from tests.fixtures.hostedrunner import (
    SYSTEM_PYTHON,
    HostedRunner,
    RunnerToolkit,
    outputs_github_keeps,
    registered_masks,
)
from tests.fixtures.leftovers import mark_session_image
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
    seconds: float = 0.0


@dataclass
class ActionRun:
    steps: list[StepRun]
    outputs: dict[str, str]
    summary: str

    def step(self, step_id: str) -> StepRun:
        return next(step for step in self.steps if step.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(
            f"--- {s.id} ({s.outcome}, {s.seconds:.1f}s)\n{s.stdout}\n{s.stderr}" for s in self.steps
        )

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
        runtime_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        process: Mapping[str, Any] | None = None,
        own: Callable[[Path], Path] = lambda path: path,
        cosign: Path | None = None,
    ) -> None:
        self.document: dict[str, Any] = yaml.safe_load(action.read_text())
        # What sigstore/cosign-installer would download (no network here): the test's provisioned cosign.
        self.cosign = cosign
        self.runtime_env = dict(runtime_env or {})
        # The hosted-runner profile: the runner's own environment, user and file ownership.
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.process = dict(process or {})
        self.own = own
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
        if expression == "runner.temp":
            return str(self.runner_temp)
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
        self.own(summary)
        self.own(env_file)
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
            if "uses" in step and "sigstore/cosign-installer@" in step["uses"]:
                results.append(self._install_cosign(step_id, name, step))
                continue
            if "uses" in step:
                # Another action: only the one that hands the cache service to later steps is known, and it
                # runs only where a test gives it the values (GitHub's runtime is not here).
                assert "ghaction-github-runtime@" in step["uses"], (
                    f"step {name}: unknown action {step['uses']}"
                )
                if self.runtime_env:
                    with env_file.open("a") as handle:
                        handle.writelines(f"{key}={value}\n" for key, value in self.runtime_env.items())
                    exported.update(self.runtime_env)
                results.append(StepRun(step_id, name, "success" if self.runtime_env else "skipped"))
                continue
            assert "run" in step, f"step {name}: only run steps are emulated"
            assert step.get("shell") == "bash", f"step {name}: composite run steps must name their shell"
            output_file = self.runner_temp / f"output_{number}"
            output_file.write_text("")
            self.own(output_file)
            environment = {
                **self.base_env,
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
            self.own(script)
            cwd = self.workspace / self.expand(step.get("working-directory", "."))
            started = time.monotonic()
            process = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=cwd,
                env=environment,
                capture_output=True,
                text=True,
                check=False,
                timeout=1200,
                **self.process,
            )
            outputs = parse_command_file(output_file.read_text())
            self.step_outputs[step_id] = outputs
            exported.update(parse_command_file(env_file.read_text()))
            outcome = "success" if process.returncode == 0 else "failure"
            failed = failed or outcome == "failure"
            results.append(
                StepRun(
                    step_id,
                    name,
                    outcome,
                    process.stdout,
                    process.stderr,
                    outputs,
                    time.monotonic() - started,
                )
            )
        action_outputs = {
            name: self.expand(str(spec["value"])) for name, spec in self.document.get("outputs", {}).items()
        }
        return ActionRun(results, action_outputs, summary.read_text())

    def _install_cosign(self, step_id: str, name: str, step: Mapping[str, Any]) -> StepRun:
        cosign_installer_stand_in(self.cosign, Path(self.expand(str(step["with"]["install-dir"]))), self.own)
        return StepRun(step_id, name, "success")


def cosign_installer_stand_in(cosign: Path | None, install_dir: Path, own: Callable[[Path], Path]) -> None:
    """What sigstore/cosign-installer leaves behind, cosign in its `install-dir` runnable by the runner user,
    made from the test's provisioned cosign: the installer downloads from GitHub, unreachable here."""
    assert cosign is not None, "the cosign installer ran, but the test gave no cosign"
    install_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cosign, install_dir / "cosign")
    own(install_dir)


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
    mark_session_image(f"{IMAGE}:")  # what `push: false` loads: gone after the session
    repo = git_repo_factory("project", initial=False)
    shutil.copytree(REPO_ROOT / "Dockerfiles" / "hello", repo.path / "hello")
    files = {str(path.relative_to(repo.path)): path.read_text() for path in (repo.path / "hello").iterdir()}
    files["pipeline.toml"] = project_config(base_image, registries)
    repo.commit("hello", files=files)
    repo.tag("v1.2.3")
    return repo


@pytest.fixture(scope="session")
def installed_toolkit(runner_toolkit: RunnerToolkit) -> Path:
    """The venv that the action's own install step makes, run once per test session.

    The install step runs for real (a venv of its own, `pip install` of the action's checkout, dependencies
    from the package index), so the toolkit is importable in the runner venv only if the action installs it:
    nothing leaks in from the interpreter running the tests or from the machine's base Python. It runs as
    the hosted-runner profile's user (`runner_toolkit`), so that the profile's tests share this one install.
    """
    venv = runner_toolkit.bin.parent
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=runner_toolkit.runner_temp,  # not the repository: its own directory on sys.path would hide a failed install
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
    assert [(s.id, s.outcome) for s in run.steps] == [
        ("install", "skipped"),
        ("runtime", "skipped"),
        ("config", "success"),
        ("lint", "success"),
        ("cosign", "skipped"),  # nothing to sign: no cosign installed
        ("release", "success"),
        ("cleanup", "success"),
    ]
    assert run.outputs["signatures"] == run.outputs["attestations"] == ""

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
def test_action_with_push_false_builds_and_tests_but_pushes_nothing(
    tmp_path: Path,
    runner_temp: Path,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    open_registry: TestRegistry,
) -> None:
    """A pull request (from a fork: no secrets): build and smoke-test on the runner, push and tag nothing."""
    repo = make_project(
        git_repo_factory,
        base_image,
        f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/nopush"\n',
    )
    repo.commit("the change under review")
    run = CompositeRunner(
        ACTION,
        workspace=repo.path,
        runner_temp=runner_temp,
        event=event_env(repo, tmp_path, kind="pr"),
        inputs={"push": "false", "platforms": "linux/amd64", "lint": "false"},
        skip=frozenset({"install"}),
    ).run()
    assert run.succeeded, run.log[-4000:]
    report = json.loads(run.outputs["json"])
    assert report["mode"] == "local" and report["images"][0]["smoke_passed"] is True
    assert run.outputs["tags"] == ""
    assert RegistryClient(open_registry.url).tags(f"nopush/{IMAGE}") == []


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
    # A dry run writes no report, so it names none (it used to name a file that did not exist).
    assert run.outputs["report"] == ""


def test_action_hands_the_cache_service_to_buildx(tmp_path: Path) -> None:
    """Composite `run:` steps do not see ACTIONS_RUNTIME_TOKEN/ACTIONS_RESULTS_URL; the runtime action exports
    them (through GITHUB_ENV) before the release step, where `cache = "auto"` then chooses `type=gha`."""
    steps = yaml.safe_load(ACTION.read_text())["runs"]["steps"]
    ids = [step.get("id") for step in steps]
    assert ids.index("runtime") < ids.index("release")
    assert re.search(r"crazy-max/ghaction-github-runtime@[0-9a-f]{40}", steps[ids.index("runtime")]["uses"])
    exported = {
        "GITHUB_ACTIONS": "true",
        "ACTIONS_RESULTS_URL": "https://results.example/",
        "ACTIONS_RUNTIME_TOKEN": "t",
    }
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    image = ImageConfig(name="acme/app")
    cache_from, cache_to = cache_settings(BuildConfig(), image, (), environ=exported)
    assert (
        cache_from == ({"type": "gha", "scope": "acme-app"},)
        and cache_to is not None
        and cache_to["type"] == "gha"
    )
    # Without the runtime's variables (what a composite step saw before): no gha.
    cache_from, _ = cache_settings(BuildConfig(), image, (), environ={"GITHUB_ACTIONS": "true"})
    assert all(source["type"] != "gha" for source in cache_from)


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
    assert [s.outcome for s in run.steps][3:] == ["skipped", "skipped", "skipped", "success"]


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


# --- the reusable workflow's jobs, as a runner executes them -------------------------------------------


class WorkflowJobs:
    """Runs the `run:` steps of release.yml's jobs on the hosted-runner profile, with GitHub's semantics for
    what the test needs: `${{ }}` from inputs, secrets, matrix, needs and step outputs (anything else fails
    the test), `if:` on those, a fresh GITHUB_OUTPUT per step, and artifacts as upload/download-artifact
    hand them over (by name; downloads by pattern, merge-multiple). Actions that set up the machine
    (checkout, setup-python, setup-buildx, QEMU, the runtime) are the profile's job, and the toolkit's
    install step is `runner_toolkit`'s (the venv is first on PATH, as setup-python + pip leave it)."""

    SETUP_ACTIONS = (
        "actions/checkout@",
        "actions/setup-python@",
        "docker/setup-",
        "crazy-max/ghaction-github-runtime@",
    )

    def __init__(
        self,
        runner: HostedRunner,
        toolkit: RunnerToolkit,
        *,
        workspace: Path,
        github: Mapping[str, str],
        inputs: Mapping[str, str],
        secrets: Mapping[str, str],
        cosign: Path | None = None,
    ) -> None:
        self.document: dict[str, Any] = yaml.safe_load(RELEASE_WORKFLOW.read_text())
        self.cosign = cosign  # what sigstore/cosign-installer would download (no network here)
        declared = _on(self.document)["workflow_call"]["inputs"]
        unknown = set(inputs) - set(declared)
        assert not unknown, f"inputs the workflow does not declare: {unknown}"
        self.inputs = {name: _text(spec.get("default", "")) for name, spec in declared.items()} | dict(inputs)
        self.secrets = dict(secrets)
        self.runner = runner
        self.toolkit = toolkit
        self.workspace = workspace
        self.github = dict(github)
        self.artifacts = runner.directory("artifacts")
        self.uploaded: list[str] = []
        self.logs: dict[str, str] = {}

    def value(self, expression: str, context: Mapping[str, str]) -> str:
        expression = expression.strip()
        match = re.fullmatch(r"(.+?)\s*==\s*'([^']*)'", expression)
        if match:
            return _text(self.value(match[1], context) == match[2])
        if expression.startswith("inputs."):
            return self.inputs[expression.removeprefix("inputs.")]
        if expression.startswith("secrets."):
            return self.secrets.get(expression.removeprefix("secrets."), "")
        if expression == "job.workflow_repository":
            return "acme/image-pipeline"
        if expression == "job.workflow_sha":
            return "0123456789abcdef0123456789abcdef01234567"
        assert expression in context, f"the test runner does not know the expression {expression!r}"
        return context[expression]

    def expand(self, text: str, context: Mapping[str, str]) -> str:
        return _EXPRESSION.sub(lambda m: self.value(m[1], context), text)

    def run(
        self, job: str, matrix: Mapping[str, Any] | None = None, needs: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """One job (one matrix entry); returns the job's outputs. Fails the test when a step fails."""
        spec = self.document["jobs"][job]
        context = {f"matrix.{k}": _text(v) for k, v in (matrix or {}).items()}
        context |= {f"needs.plan.outputs.{k}": v for k, v in (needs or {}).items()}
        if "if" in spec and self.value(spec["if"], context) != "true":
            return {}
        temp = self.runner.directory(
            f"temp-{job}-{_text((matrix or {}).get('slug', (matrix or {}).get('image_slug', '')))}"
        )
        context["runner.temp"] = str(temp)
        log = []
        for number, step in enumerate(spec["steps"]):
            condition = step.get("if")
            if condition and self.value(condition, context) != "true":
                continue
            if "uses" in step:
                self._action(step, context, temp)
                continue
            if str(step.get("name", "")).startswith("Install the toolkit"):
                continue
            output = temp / f"output-{number}"
            output.write_text("")
            self.runner.own(output)
            env = self.runner.environment(
                {
                    **self.github,
                    "RUNNER_TEMP": str(temp),
                    "GITHUB_OUTPUT": str(output),
                    "GITHUB_STEP_SUMMARY": str(temp / "summary.md"),
                },
                extra_path=self.toolkit.bin,
            )
            env |= {key: self.expand(str(value), context) for key, value in step.get("env", {}).items()}
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", self.expand(step["run"], context)],
                cwd=self.workspace,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
                **self.runner.process,
            )
            log.append(f"--- {job} {step.get('name', step.get('id'))}\n{result.stdout}\n{result.stderr}")
            assert result.returncode == 0, "\n".join(log)[-6000:]
            for name, value in parse_command_file(output.read_text()).items():
                context[f"steps.{step.get('id', number)}.outputs.{name}"] = value
        self.logs[f"{job} {_text((matrix or {}).get('slug', ''))}"] = "\n".join(log)
        return {name: self.expand(str(value), context) for name, value in spec.get("outputs", {}).items()}

    def _action(self, step: Mapping[str, Any], context: Mapping[str, str], temp: Path) -> None:
        uses = str(step["uses"])
        with_ = {key: self.expand(_text(value), context) for key, value in step.get("with", {}).items()}
        if uses.startswith("actions/upload-artifact@"):
            name = with_["name"]
            assert name not in self.uploaded or with_.get("overwrite") == "true", (
                f"artifact {name} uploaded twice"
            )
            self.uploaded.append(name)
            (self.artifacts / name).mkdir(exist_ok=True)
            shutil.copy(with_["path"], self.artifacts / name)
        elif uses.startswith("actions/download-artifact@"):
            assert with_.get("merge-multiple") == "true"
            target = Path(with_["path"])
            target.mkdir(parents=True, exist_ok=True)
            for artifact in sorted(self.artifacts.iterdir()):
                if fnmatch.fnmatchcase(artifact.name, with_["pattern"]):
                    for file in artifact.iterdir():
                        shutil.copy(file, target / file.name)
            self.runner.own(target)
        elif uses.startswith("sigstore/cosign-installer@"):
            cosign_installer_stand_in(self.cosign, Path(with_["install-dir"]), self.runner.own)
        else:
            assert uses.startswith(self.SETUP_ACTIONS), f"the test runner does not know the action {uses}"


def _on(document: Mapping[Any, Any]) -> Any:
    """The `on:` table (YAML 1.1, which PyYAML speaks, reads the bare key `on` as true)."""
    return document["on"] if "on" in document else document[True]


def _text(value: Any) -> str:
    """A value as `${{ }}` renders it: booleans in lower case."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.engine
def test_reusable_workflow_jobs_on_hosted_runners(
    tmp_path: Path,
    hosted_runner: HostedRunner,
    runner_toolkit: RunnerToolkit,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    auth_registry: TestRegistry,
) -> None:
    """plan -> build per platform (each its own runner, at the same time) -> merge -> publish, as the
    non-root runner; logins from the registry-auths secret, the namespace being the (unmasked) user name;
    the publish job signs with the key from the cosign-private-key/cosign-password secrets."""
    repo = make_project(git_repo_factory, base_image, "")
    workspace = runner_project(hosted_runner, repo)
    user, password = auth_registry.username, auth_registry.password
    key_password = "key-password-" + os.urandom(6).hex()
    key, _ = generate_key_pair(tmp_path, key_password)
    jobs = WorkflowJobs(
        hosted_runner,
        runner_toolkit,
        workspace=workspace,
        github=github_variables(hosted_runner, repo, workspace),
        inputs={
            "lint": "false",
            "registries": f'[[registries]]\nname = "hub"\nurl = "{auth_registry.url}/{user}/fanout"\n',
            "labels": "com.example.team=imaging",
            "sign": "key",
        },
        secrets={
            "registry-auths": f"- registry: {auth_registry.url}\n  username: {user}\n  password: {password}\n",
            "cosign-private-key": key,
            "cosign-password": key_password,
        },
        cosign=Path(ensure_cosign()),
    )
    plan = jobs.run("plan")
    matrix = json.loads(plan["matrix"])["include"]
    assert {(e["platform"], e["runner"], e["emulate"]) for e in matrix} == {
        ("linux/amd64", "ubuntu-24.04", False),
        ("linux/arm64", "ubuntu-24.04-arm", False),
    }
    with ThreadPoolExecutor(max_workers=len(matrix)) as pool:
        list(pool.map(lambda entry: jobs.run("build", entry, plan), matrix))
    # Each native job asked the engine only for its own platform.
    for entry in matrix:
        log = jobs.logs[f"build {entry['slug']}"]
        (line,) = [line for line in log.splitlines() if "engine ready for" in line]
        assert entry["platform"] in line and len(re.findall(r"linux/\w+", line)) == 1, line
    for entry in json.loads(plan["merge-matrix"])["include"]:
        jobs.run("merge", entry, plan)
    outputs = jobs.run("publish", None, plan)

    assert all(name.startswith(plan["artifact-prefix"]) for name in jobs.uploaded)
    masks = registered_masks("\n".join(jobs.logs.values()))
    assert password in masks and user not in masks
    kept = outputs_github_keeps(outputs, masks)
    assert kept["version"] == "1.2.3"
    assert f"{auth_registry.url}/{user}/fanout/{IMAGE}:latest" in kept["tags"].splitlines()
    assert "com.example.team=imaging" in kept["labels"].splitlines()
    hub = RegistryClient(auth_registry.url, Credentials(user, password))
    digest = kept["digest"]
    assert hub.manifest_digest(f"{user}/fanout/{IMAGE}", "1.2.3") == digest
    assert set(hub.platform_digests(f"{user}/fanout/{IMAGE}", digest)) == {"linux/amd64", "linux/arm64"}
    assert json.loads(kept["json"])["status"] == "published"
    # The publish job signed the tested digest; the workflow's outputs name the signature and attestation.
    repository = f"{auth_registry.url}/{user}/fanout/{IMAGE}"
    assert kept["signatures"].splitlines() == [f"{repository}:{signature_tag(digest, 'sig')}"]
    assert kept["attestations"].splitlines() == [f"{repository}:{signature_tag(digest, 'att')}"]
    assert hub.manifest_digest(f"{user}/fanout/{IMAGE}", signature_tag(digest, "sig")) is not None
    log = "\n".join(jobs.logs.values())
    for secret in (*key.splitlines(), key_password):
        assert secret in masks and secret not in log.replace(f"::add-mask::{secret}", ""), secret


def test_push_false_builds_and_publishes_nothing() -> None:
    document = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    jobs = document["jobs"]
    assert jobs["merge"]["if"] == jobs["publish"]["if"] == "inputs.push"
    (build,) = [s for s in jobs["build"]["steps"] if str(s.get("name", "")).startswith("Build")]
    assert '[ "$PUSH" = "true" ]' in build["run"] and "--push-by-digest" in build["run"]
    (upload,) = [s for s in jobs["build"]["steps"] if "upload-artifact" in str(s.get("uses"))]
    assert upload["if"] == "inputs.push"


def test_reusable_workflow_installs_the_pinned_commit_only() -> None:
    """No branch, no placeholder repository: the commit the caller pinned (job.workflow_sha), or a full SHA."""
    document = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    inputs = _on(document)["workflow_call"]["inputs"]
    assert "toolkit-ref" not in inputs
    assert inputs["toolkit-sha"]["default"] == "" and inputs["toolkit-repository"]["default"] == ""
    installs = [
        step
        for job in document["jobs"].values()
        for step in job["steps"]
        if str(step.get("name", "")).startswith("Install the toolkit")
    ]
    assert len(installs) == len(document["jobs"]) and all(step == installs[0] for step in installs)
    env = installs[0]["env"]
    assert env["WORKFLOW_SHA"] == "${{ job.workflow_sha }}"
    assert env["WORKFLOW_REPOSITORY"] == "${{ job.workflow_repository }}"
    for given in ({"TOOLKIT_SHA": "main"}, {"TOOLKIT_SHA": "0123abc"}, {}):
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", installs[0]["run"]],
            env={"PATH": os.environ["PATH"], "TOOLKIT_REPOSITORY": "acme/image-pipeline", **given},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1 and "::error" in result.stdout and "input toolkit-sha" in result.stdout


def test_promotions_run_one_at_a_time() -> None:
    """Two close tags: the second release waits for the first instead of racing it to `latest`."""
    publish = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]["publish"]
    assert publish["concurrency"]["cancel-in-progress"] is False
    assert "${{ github.repository }}" in publish["concurrency"]["group"]
    assert publish["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    ci = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert ci["jobs"]["release"]["concurrency"]["cancel-in-progress"] is False


def test_cosign_comes_from_the_pinned_installer_only_when_the_release_signs() -> None:
    """On a runner, cosign comes from sigstore/cosign-installer pinned by full commit with its version in a
    comment, cosign 2.x (the tag scheme every registry takes), installed only when the config step says the
    release signs, and the release uses exactly that binary. The action and the workflow pin the same."""
    texts = ACTION.read_text() + RELEASE_WORKFLOW.read_text()
    pins = re.findall(r"^\s*(?:- )?uses: sigstore/cosign-installer@(\S+) # (\S+)$", texts, re.MULTILINE)
    assert len(pins) == 2 and len(set(pins)) == 1, pins
    ((sha, version),) = set(pins)
    assert re.fullmatch(r"[0-9a-f]{40}", sha) and re.fullmatch(r"v3\.\d+\.\d+", version)
    action = yaml.safe_load(ACTION.read_text())
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    for steps in (action["runs"]["steps"], workflow["jobs"]["publish"]["steps"]):
        (installer,) = [step for step in steps if "cosign-installer" in str(step.get("uses"))]
        (release,) = [step for step in steps if step.get("id") == "release"]
        assert steps.index(installer) < steps.index(release)
        assert installer["if"] == "steps.config.outputs.install-cosign == 'true'"
        assert re.fullmatch(r"v2\.\d+\.\d+", installer["with"]["cosign-release"])
        install_dir = installer["with"]["install-dir"].replace("${{ runner.temp }}", "${RUNNER_TEMP}")
        assert release["env"]["INSTALL_COSIGN"] == "${{ steps.config.outputs.install-cosign }}"
        assert f'export PIPELINE_COSIGN="{install_dir}/cosign"' in release["run"]


def test_signatures_and_attestations_are_outputs_of_the_action_and_the_workflow() -> None:
    action = yaml.safe_load(ACTION.read_text())
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    for name in ("signatures", "attestations"):
        assert action["outputs"][name]["value"] == f"${{{{ steps.release.outputs.{name} }}}}"
        assert (
            _on(workflow)["workflow_call"]["outputs"][name]["value"]
            == f"${{{{ jobs.publish.outputs.{name} }}}}"
        )
        assert workflow["jobs"]["publish"]["outputs"][name] == f"${{{{ steps.release.outputs.{name} }}}}"
    # Keyless signing takes the job's OIDC token: only the job that signs may ask for one.
    assert [job for job, spec in workflow["jobs"].items() if "id-token" in spec["permissions"]] == ["publish"]
    assert set(action["inputs"]) >= {"sign", "sign-key-env", "sign-password-env", "install-cosign"}


# --- on the hosted-runner profile (tests/fixtures/hostedrunner.py) -------------------------------------


def runner_project(hosted_runner: HostedRunner, repo: GitRepo) -> Path:
    """The checkout as actions/checkout leaves it: in the workspace, owned by the runner user."""
    workspace = hosted_runner.directory("work") / "hello"
    shutil.copytree(repo.path, workspace)
    return hosted_runner.own(workspace)


def github_variables(hosted_runner: HostedRunner, repo: GitRepo, workspace: Path) -> dict[str, str]:
    """A `v1.2.3` tag push, as GitHub sets it up for every step (payload in GITHUB_EVENT_PATH)."""
    payload = {"ref": "refs/tags/v1.2.3", "repository": {"default_branch": "main", "full_name": "acme/hello"}}
    return {
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": str(hosted_runner.event("push", payload)),
        "GITHUB_REF": "refs/tags/v1.2.3",
        "GITHUB_REF_NAME": "v1.2.3",
        "GITHUB_REF_TYPE": "tag",
        "GITHUB_SHA": repo.head,
        "GITHUB_REPOSITORY": "acme/hello",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_WORKSPACE": str(workspace),
    }


@pytest.mark.engine
def test_action_on_a_hosted_runner_native_amd64(
    tmp_path: Path,
    hosted_runner: HostedRunner,
    runner_toolkit: RunnerToolkit,
    git_repo_factory: GitRepoFactory,
    base_image: str,
    auth_registry: TestRegistry,
) -> None:
    """The composite action as a non-root runner runs it, installed by its own install step (once per session,
    `runner_toolkit`): a Docker Hub-like
    registry whose namespace is the login name (given through registry-auths, the user name not secret),
    every build-push-action style input, only linux/amd64 (the native amd64 job: no arm64 asked for), and
    signed with a cosign key that comes in as env of the step (secrets), as a workflow passes it."""
    repo = make_project(git_repo_factory, base_image, "")
    workspace = runner_project(hosted_runner, repo)
    user, password = auth_registry.username, auth_registry.password
    build_secret = "build-secret-" + os.urandom(6).hex()
    key_password = "key-password-" + os.urandom(6).hex()
    key, _ = generate_key_pair(tmp_path, key_password)
    run = CompositeRunner(
        runner_toolkit.action / "action.yml",
        workspace=workspace,
        runner_temp=runner_toolkit.runner_temp,
        event=github_variables(hosted_runner, repo, workspace),
        inputs={
            "python": SYSTEM_PYTHON,
            "platforms": "linux/amd64",
            "registries": f'[[registries]]\nname = "hub"\nurl = "{auth_registry.url}/{user}"\n',
            # A secret in real use (`${{ secrets.REGISTRY_AUTHS }}`); the user name inside it is not masked.
            "registry-auths": f"- registry: {auth_registry.url}\n  username: {user}\n  password: {password}\n",
            "tags": "stable-test",
            "labels": "com.example.team=imaging",
            "annotations": "com.example.note=from the action",
            "provenance": "false",
            "secrets": f"NOTE={build_secret}",
            "sign": "key",  # the key's variables: the defaults, COSIGN_PRIVATE_KEY and COSIGN_PASSWORD
        },
        # `env:` of the step, from secrets in real use; every step of the composite action sees it.
        step_env={"COSIGN_PRIVATE_KEY": key, "COSIGN_PASSWORD": key_password},
        base_env=hosted_runner.environment({}),
        process=hosted_runner.process,
        own=hosted_runner.own,
        skip=frozenset({"install"}),
        # Where the installer would download cosign from GitHub, the stand-in has the provisioned one.
        cosign=Path(ensure_cosign()),
    ).run()
    assert run.succeeded, run.log[-6000:]
    assert run.step("cosign").outcome == "success"
    masks = registered_masks(run.log)
    assert password in masks and build_secret in masks and user not in masks
    # The key (line by line: GitHub masks one line per command) and its password are masked by the config
    # step, before any step that runs cosign; after that they are in no log and no file the steps wrote.
    key_secrets = [*key.splitlines(), key_password]
    assert set(key_secrets) <= set(registered_masks(run.step("config").stdout))
    written = [path for path in runner_toolkit.runner_temp.iterdir() if path.is_file()]
    assert any(path.name.startswith("output_") for path in written)
    for secret in (password, build_secret, *key_secrets):
        assert secret not in run.log.replace(f"::add-mask::{secret}", ""), secret
        assert not [path.name for path in written if secret in path.read_text(errors="replace")], secret

    # The engine was asked for amd64 only: a runner without QEMU passes this check.
    (engine_line,) = [line for line in run.step("release").stderr.splitlines() if "engine ready for" in line]
    assert "linux/amd64" in engine_line and "arm64" not in engine_line

    outputs = outputs_github_keeps(run.outputs, masks)
    assert outputs["version"] == "1.2.3"
    repository = f"{auth_registry.url}/{user}/{IMAGE}"
    assert {f"{repository}:{t}" for t in ("1.2.3", "latest", "stable-test")} <= set(
        outputs["tags"].splitlines()
    )
    labels = dict(line.split("=", 1) for line in outputs["labels"].splitlines())
    assert labels["com.example.team"] == "imaging" and labels["org.opencontainers.image.version"] == "1.2.3"
    report = Path(outputs["report"])
    assert report.is_file() and report.stat().st_uid == hosted_runner.user.pw_uid
    assert json.loads(outputs["json"])["status"] == "published"
    assert "### Release 1.2.3" in run.summary

    hub = RegistryClient(auth_registry.url, Credentials(user, password))
    digest = outputs["digest"]
    assert hub.manifest_digest(f"{user}/{IMAGE}", "stable-test") == digest
    (platform_digest,) = hub.platform_digests(f"{user}/{IMAGE}", digest).values()
    assert list(hub.platform_digests(f"{user}/{IMAGE}", digest)) == ["linux/amd64"]
    manifest = hub.get_manifest(f"{user}/{IMAGE}", platform_digest).document
    config = hub.get_blob_json(f"{user}/{IMAGE}", manifest["config"]["digest"])
    assert config["config"]["Labels"]["com.example.team"] == "imaging"
    annotated = {
        **hub.get_manifest(f"{user}/{IMAGE}", digest).document.get("annotations", {}),
        **manifest.get("annotations", {}),
    }
    assert annotated["com.example.note"] == "from the action"

    # Signed and attested in the registry, for the index digest; the outputs and the summary name both.
    signature = f"{repository}:{signature_tag(digest, 'sig')}"
    attestation = f"{repository}:{signature_tag(digest, 'att')}"
    assert outputs["signatures"].splitlines() == [signature]
    assert outputs["attestations"].splitlines() == [attestation]
    assert signature in run.summary and attestation in run.summary
    signed = hub.get_manifest(f"{user}/{IMAGE}", signature_tag(digest, "sig")).document
    payload = hub.get_blob_json(f"{user}/{IMAGE}", signed["layers"][0]["digest"])
    assert payload["critical"]["image"]["docker-manifest-digest"] == digest
    assert hub.manifest_digest(f"{user}/{IMAGE}", signature_tag(digest, "att")) is not None


def test_github_drops_an_output_holding_a_masked_value() -> None:
    # Why the Docker Hub user name must not be a secret: the namespace is in every tag.
    outputs = {"tags": "docker.io/octocat/app:1.2.3", "version": "1.2.3"}
    assert outputs_github_keeps(outputs, ["octocat"]) == {"tags": "", "version": "1.2.3"}
    assert outputs_github_keeps(outputs, ["s3cret"]) == outputs
