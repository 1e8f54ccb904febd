"""The hostile case list: what a hostile but fair user tries. Each case is one or more runs of the real CLI.

`expect` is a piece of the one error line the case must end with; `expect_rc` the exit codes that are right.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.faultproxy import FaultPlan
from tests.hostile.world import World, git

SIGINT, SIGTERM = int(signal.SIGINT), int(signal.SIGTERM)
GHP = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0AaSsDdFfGgHhJjKk"
PASTED = ("correct horse battery", "aB3dE5fG7hJ9kL1mN3pQ")


@dataclass
class Ctx:
    world: World
    project: Path
    namespace: str
    tmp: Path
    hosts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    what: str
    args: tuple[str, ...] = ("release",)
    registries: str = "private"
    extra: str = ""  # more keys for the [[images]] table
    tail: str = ""  # more TOML after the registries
    config: Callable[[str], str] | None = None
    prepare: Callable[[Ctx], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    expect_rc: tuple[int, ...] = (1, 2)
    expect: str = ""
    faults: dict[str, FaultPlan] = field(default_factory=dict)
    send: tuple[int, str, float] | None = None
    runs: int = 1
    tag: str | None = "v1.2.3"


def _write(path: str, text: str, commit: bool = True) -> Callable[[Ctx], None]:
    def prepare(ctx: Ctx) -> None:
        target = ctx.project / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if commit:
            git(ctx.project, "add", "-A", "-f")
            git(ctx.project, "commit", "-q", "-m", f"write {path}")
            git(ctx.project, "tag", "-f", "v1.2.3")

    return prepare


def _both(first: Callable[[Ctx], None], second: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def prepare(ctx: Ctx) -> None:
        first(ctx)
        second(ctx)

    return prepare


def _remove(path: str) -> Callable[[Ctx], None]:
    def prepare(ctx: Ctx) -> None:
        git(ctx.project, "rm", "-q", "-r", path)
        git(ctx.project, "commit", "-q", "-m", f"remove {path}")
        git(ctx.project, "tag", "-f", "v1.2.3")

    return prepare


def _git(*commands: tuple[str, ...]) -> Callable[[Ctx], None]:
    def prepare(ctx: Ctx) -> None:
        for command in commands:
            git(ctx.project, *command)

    return prepare


def _shallow(ctx: Ctx) -> None:
    source = ctx.project.with_name(ctx.project.name + "-origin")
    ctx.project.rename(source)
    git(source, "commit", "-q", "--allow-empty", "-m", "second")
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", source.as_uri(), str(ctx.project)],
        check=True,
        capture_output=True,
    )


def _no_commits(ctx: Ctx) -> None:
    import shutil

    shutil.rmtree(ctx.project / ".git")
    git(ctx.project, "init", "-q")


def _not_a_repo(ctx: Ctx) -> None:
    import shutil

    shutil.rmtree(ctx.project / ".git")


def _replace(old: str, new: str) -> Callable[[str], str]:
    return lambda text: text.replace(old, new)


def _merge_file(ctx: Ctx) -> None:
    (ctx.project / "digest.json").write_text('{"image": "acme/hello"}')


FAILING_SMOKE = "schemaVersion: 2.0.0\ncommandTests:\n  - name: greets in French\n    command: /app/hello.sh\n    expectedOutput: ['^bonjour']\n"
HANGING_SMOKE = (
    "schemaVersion: 2.0.0\ncommandTests:\n  - name: hangs\n    command: sleep\n    args: ['600']\n"
)
ARM_ONLY_FAIL = "schemaVersion: 2.0.0\ncommandTests:\n  - name: amd64 only\n    command: uname\n    args: ['-m']\n    expectedOutput: ['x86_64']\n"
SLOW_SMOKE = "schemaVersion: 2.0.0\ncommandTests:\n  - name: slow\n    command: sleep\n    args: ['20']\n"


def _config_cases() -> list[Case]:
    bad = [
        ("unknown-key", 'contxt = "."', "unknown key"),
        ("platform-string", 'platforms = "linux/amd64"', "wrong type"),
        ("platform-unknown", 'platforms = ["linux/sparc"]', "unknown platform"),
        ("platform-twice", 'platforms = ["linux/amd64", "linux/amd64"]', "platform twice"),
        ("platform-empty", "platforms = []", "at least one platform"),
        ("computed-label", 'labels = { "org.opencontainers.image.version" = "9" }', "computed from git"),
        ("dockerfile-int", "dockerfile = 5", "wrong type"),
        ("tags-kind", 'tags = { kinds = ["semver", "bogus"] }', "kinds"),
        ("tags-raw-bad", 'tags = { raw = ["bad tag!"] }', "not valid"),
        ("tags-prefix-bad", 'tags = { prefix = "!" }', "not valid"),
        ("name-upper", None, "not a valid image name"),
    ]
    cases = []
    for case_id, extra, expect in bad:
        if extra is None:
            cases.append(
                Case(
                    f"config-{case_id}",
                    "config",
                    "image name with capitals",
                    config=_replace("acme/hello", "Acme/Hello"),
                    expect=expect,
                )
            )
        else:
            cases.append(
                Case(
                    f"config-{case_id}",
                    "config",
                    f"image key: {extra.splitlines()[0]}",
                    extra=extra,
                    expect=expect,
                )
            )
    registry_bad = [
        ("url-scheme", "https://r.example/x", "without a scheme"),
        ("url-dotdot", "127.0.0.1:5000/../etc", "'..'"),
        ("url-port-big", "127.0.0.1:70000/x", "outside 1-65535"),
        ("url-port-zero", "127.0.0.1:0/x", "outside 1-65535"),
        ("url-empty-label", "registry..example/x", "not a valid host name"),
        ("url-upper-namespace", "r.example/Team", "not host[:port][/namespace]"),
    ]
    for case_id, url, expect in registry_bad:
        cases.append(
            Case(
                f"config-{case_id}",
                "config",
                f"registry url {url!r}",
                registries="none",
                tail=f'[[registries]]\nname = "r"\nurl = "{url}"\n',
                expect=expect,
            )
        )
    secret_fields = [
        ("pw-ghp", GHP, "not shown"),
        ("pw-pasted", PASTED[0], "not shown"),
        ("pw-mixed-token", PASTED[1], "not shown"),
        ("pw-int", None, "must name an environment variable"),
    ]
    for case_id, value, expect in secret_fields:
        field_text = "password_env = 123456" if value is None else f'password_env = "{value}"'
        cases.append(
            Case(
                f"config-{case_id}",
                "secrets",
                "a secret pasted into password_env",
                registries="none",
                tail=f'[[registries]]\nname = "r"\nurl = "r.example/x"\nusername_env = "U"\n{field_text}\n',
                expect=expect,
            )
        )
    cases += [
        Case(
            "config-one-env",
            "config",
            "username_env without password_env",
            registries="none",
            tail='[[registries]]\nname = "r"\nurl = "r.example"\nusername_env = "U"\n',
            expect="both",
        ),
        Case(
            "config-dup-registry",
            "config",
            "two registries named alike",
            registries="none",
            tail='[[registries]]\nname = "r"\nurl = "a.example"\n[[registries]]\nname = "r"\nurl = "b.example"\n',
            expect="declared twice",
        ),
        Case(
            "config-bad-toml",
            "config",
            "not TOML",
            config=lambda text: text + "\n[[images]\n",
            expect="not valid TOML",
        ),
        Case(
            "config-no-images",
            "config",
            "no images",
            config=lambda text: '[build]\ncache = "none"\n',
            expect="images",
        ),
        Case(
            "config-smoke-timeout",
            "config",
            "negative smoke timeout",
            config=_replace("timeout = 60", "timeout = -1"),
            expect="smoke.timeout",
        ),
        Case(
            "config-cache-bad",
            "config",
            "unknown build cache",
            config=_replace('cache = "none"', 'cache = "s3"'),
            expect="build.cache",
        ),
        Case(
            "config-local-port",
            "config",
            "local registry port 70000",
            tail="[local_registry]\nport = 70000\n",
            expect="local_registry.port",
        ),
        Case(
            "config-secret-build-arg",
            "config",
            "a build arg named like a secret",
            config=_replace("build_args = { BASE", 'build_args = { GITHUB_TOKEN = "x", BASE'),
            expect="looks like a secret",
        ),
        Case(
            "config-pyproject-no-section",
            "config",
            "--config pyproject.toml without [tool.pipeline]",
            args=("--config", "pyproject.toml", "release"),
            prepare=_write("pyproject.toml", "[project]\nname = 'x'\n"),
            expect="no [tool.pipeline]",
        ),
        Case(
            "config-images-not-list",
            "config",
            "images as a table",
            config=lambda text: text.replace("[[images]]", "[images]"),
            expect="images",
        ),
        Case(
            "config-missing-file",
            "config",
            "--config names no file",
            args=("--config", "/nonexistent/pipeline.toml", "release"),
            expect="not found",
        ),
    ]
    return cases


def _preflight_cases() -> list[Case]:
    return [
        Case(
            "files-no-dockerfile",
            "preflight",
            "the Dockerfile is missing",
            prepare=_remove("hello/Dockerfile"),
            expect="does not exist",
        ),
        Case(
            "files-no-dockerfile-dry",
            "preflight",
            "dry run of a missing Dockerfile",
            args=("release", "--dry-run"),
            prepare=_remove("hello/Dockerfile"),
            expect="does not exist",
        ),
        Case(
            "files-no-context",
            "preflight",
            "the context folder is missing",
            config=_replace('context = "hello"', 'context = "nowhere"'),
            expect="does not exist",
        ),
        Case(
            "files-smoke-missing",
            "preflight",
            "the declared smoke file is missing",
            extra='smoke = "hello/none.yaml"',
            expect="does not exist",
        ),
        Case(
            "files-smoke-yaml",
            "preflight",
            "the smoke file is not YAML",
            prepare=_write("hello/smoke.yaml", "schemaVersion: [\n"),
            expect="smoke.yaml",
        ),
        Case(
            "files-smoke-lookbehind",
            "preflight",
            "a lookbehind in a smoke regex",
            prepare=_write(
                "hello/smoke.yaml",
                "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    command: sh\n    expectedOutput: ['(?<=a)b']\n",
            ),
            expect="lookbehind",
        ),
        Case(
            "files-smoke-backref",
            "preflight",
            "a backreference in a smoke regex",
            prepare=_write(
                "hello/smoke.yaml",
                "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    command: sh\n    expectedOutput: ['(a)\\1']\n",
            ),
            expect="backreference",
        ),
        Case(
            "files-s390x",
            "preflight",
            "a platform the engine cannot build",
            extra='platforms = ["linux/amd64", "linux/s390x"]',
            expect="cannot be built by this engine",
        ),
        Case(
            "files-report-unwritable",
            "preflight",
            "--report below a file",
            args=("release", "--report", "pipeline.toml/release.json"),
            expect="--report",
        ),
        Case(
            "files-unknown-image",
            "preflight",
            "--image names nothing",
            args=("release", "--image", "nope"),
            expect="not declared",
        ),
        Case(
            "files-bad-digest",
            "preflight",
            "--digest malformed",
            args=("release", "--digest", "acme/hello=sha256:xyz"),
            expect="--digest",
        ),
    ]


def _git_cases() -> list[Case]:
    return [
        Case(
            "git-not-a-repo",
            "git",
            "no git repository",
            prepare=_not_a_repo,
            expect="not inside a git repository",
        ),
        Case(
            "git-no-commits", "git", "a repository without commits", prepare=_no_commits, expect="no commits"
        ),
        Case("git-shallow", "git", "a shallow clone", prepare=_shallow, expect="shallow clone"),
        Case(
            "git-dirty",
            "git",
            "uncommitted tracked change",
            prepare=_write("hello/hello.sh", "#!/bin/sh\necho changed\n", commit=False),
            expect="uncommitted",
        ),
        Case(
            "git-untracked-in-context",
            "git",
            "an untracked file the build would send",
            prepare=_both(
                _write("hello/.dockerignore", "smoke.yaml\n"), _write("hello/notes.txt", "x", commit=False)
            ),
            expect="hello/notes.txt",
        ),
        Case(
            "git-ignored-in-context",
            "git",
            "a git-ignored local.env the build would send",
            prepare=_both(
                _write("hello/.dockerignore", "smoke.yaml\n"),
                _write("hello/local.env", "TOKEN=1", commit=False),
            ),
            expect="hello/local.env",
        ),
        Case(
            "git-fetch-bad-remote",
            "git",
            "--fetch-tags with a remote that is gone",
            args=("release", "--fetch-tags"),
            prepare=_git(("remote", "add", "origin", "/nonexistent/repo.git")),
            expect="fatal:",
        ),
        Case(
            "git-release-1",
            "git",
            "only a non-release tag on HEAD (dry run)",
            args=("release", "--dry-run"),
            tag="release-1",
            expect_rc=(0,),
            expect="not a release tag",
        ),
        Case(
            "git-dirty-allowed",
            "git",
            "--allow-dirty publishes without sha/branch/edge tags",
            args=("release", "--allow-dirty"),
            prepare=_write(
                "hello/hello.sh", '#!/bin/sh\necho "hello from $(uname -m)"\n# dirty\n', commit=False
            ),
            expect_rc=(0,),
        ),
    ]


def _env_cases() -> list[Case]:
    return [
        Case(
            "env-retry-abc",
            "env",
            "PIPELINE_RETRY_ATTEMPTS=abc",
            env={"PIPELINE_RETRY_ATTEMPTS": "abc"},
            expect="is not a number",
        ),
        Case(
            "env-delay-negative",
            "env",
            "PIPELINE_RETRY_FIRST_DELAY=-1",
            env={"PIPELINE_RETRY_FIRST_DELAY": "-1"},
            expect="negative",
        ),
        Case(
            "env-token-unset",
            "env",
            "the hub token variable is not set",
            registries="both",
            env={"HOSTILE_HUB_TOKEN": ""},
            expect="HOSTILE_HUB_TOKEN is not set",
        ),
        Case(
            "env-wrong-password",
            "secrets",
            "a wrong hub password (401, not retried)",
            registries="both",
            env={"HOSTILE_HUB_TOKEN": "wrong-password-123"},
            expect="refused the credentials",
        ),
    ]


def _fault_cases() -> list[Case]:
    quick = {"PIPELINE_RETRY_ATTEMPTS": "2", "PIPELINE_RETRY_FIRST_DELAY": "0.05"}
    pipeline = "image-pipeline"
    return [
        Case(
            "fault-registry-down",
            "faults",
            "the registry is not running",
            registries="none",
            tail='[[registries]]\nname = "gone"\nurl = "127.0.0.1:9/x"\n',
            env=quick,
            expect="gone",
        ),
        Case(
            "fault-flaky-publishes",
            "faults",
            "a quarter of requests fail: retried through",
            registries="both",
            faults={
                "private": FaultPlan(rate=0.25, agent=pipeline, max_in_a_row=1, seed=3),
                "hub": FaultPlan(rate=0.25, agent=pipeline, max_in_a_row=1, seed=4),
            },
            env={"PIPELINE_RETRY_FIRST_DELAY": "0.05"},
            expect_rc=(0,),
        ),
        Case(
            "fault-blobs-500",
            "faults",
            "every blob upload answers 500",
            faults={
                "private": FaultPlan(always=True, faults=("500",), path="/blobs/uploads", agent=pipeline)
            },
            env=quick,
            expect="gave up",
        ),
        Case(
            "fault-dies-mid-push",
            "faults",
            "the registry dies halfway through the push",
            faults={"private": FaultPlan(always=True, after=10, agent=pipeline, faults=("reset",))},
            env=quick,
            expect="private",
        ),
        Case(
            "fault-second-rejects-tags",
            "faults",
            "the second registry rejects tag writes (500): all or nothing",
            registries="both",
            faults={
                "private": FaultPlan(
                    always=True, faults=("500",), method="PUT", path="/manifests/(latest|1)$"
                )
            },
            env=quick,
            expect="private",
        ),
        Case(
            "fault-first-rejects-latest",
            "faults",
            "the first registry rejects `latest` after the others moved",
            registries="both",
            faults={"hub": FaultPlan(always=True, faults=("503",), method="PUT", path="/manifests/latest$")},
            env=quick,
            expect="hub",
        ),
        Case(
            "fault-down-at-promotion",
            "faults",
            "tag reads fail at promotion",
            registries="both",
            faults={
                "private": FaultPlan(
                    always=True,
                    faults=("503",),
                    method="HEAD",
                    path="/manifests/(1\\.2\\.3|latest)$",
                    agent=pipeline,
                )
            },
            env=quick,
            expect="private",
        ),
        Case(
            "fault-resets-flaky",
            "faults",
            "connection resets on a third of requests",
            faults={
                "private": FaultPlan(rate=0.33, faults=("reset",), agent=pipeline, max_in_a_row=1, seed=9)
            },
            env={"PIPELINE_RETRY_FIRST_DELAY": "0.05"},
            expect_rc=(0,),
        ),
        Case(
            "fault-pull-down",
            "faults",
            "the engine's pulls fail (smoke cannot pull)",
            faults={"private": FaultPlan(always=True, faults=("503",), agent="^(?!image-pipeline)")},
            env=quick,
            expect="smoke",
        ),
    ]


def _smoke_cases() -> list[Case]:
    return [
        Case(
            "smoke-fails",
            "smoke",
            "a failing smoke test",
            prepare=_write("hello/smoke.yaml", FAILING_SMOKE),
            expect="no tag was moved",
        ),
        Case(
            "smoke-hangs",
            "smoke",
            "a hanging check is killed at the bound",
            tail="",
            config=_replace("timeout = 60", "timeout = 5"),
            prepare=_write("hello/smoke.yaml", HANGING_SMOKE),
            expect="smoke tests",
        ),
        Case(
            "smoke-arm64-only-fail",
            "smoke",
            "fails on arm64 only",
            prepare=_write("hello/smoke.yaml", ARM_ONLY_FAIL),
            expect="no tag was moved",
        ),
        Case(
            "smoke-cli-down",
            "smoke",
            "`pipeline smoke` against a registry that is down",
            args=("smoke", "127.0.0.1:9/acme/hello:1", "--platform", "linux/amd64"),
            expect="cannot be reached",
        ),
    ]


def _signal_cases() -> list[Case]:
    slow_proxy = {"private": FaultPlan(latency=0.15)}
    phases = [
        ("import", {}, 0.0, ""),
        ("start", {}, 0.0, ""),
        ("engine", {}, 0.0, ""),
        ("registries", {"private": FaultPlan(latency=0.4)}, 0.1, ""),
        ("build", {}, 1.5, "RUN sleep 30\n"),
        ("push", slow_proxy, 0.5, ""),
        ("smoke", {}, 2.0, SLOW_SMOKE),
        ("promote", slow_proxy, 0.3, ""),
    ]
    cases = []
    for signum, name in ((SIGINT, "sigint"), (SIGTERM, "sigterm")):
        for phase, faults, delay, extra in phases:
            prepare = None
            if phase == "build":
                prepare = _append_dockerfile(extra + f"# {name}\n")
            elif phase == "smoke":
                prepare = _write("hello/smoke.yaml", extra)
            cases.append(
                Case(
                    f"signal-{name}-{phase}",
                    "signals",
                    f"{name.upper()} during {phase}",
                    registries="both" if phase == "promote" else "private",
                    faults=faults
                    if phase != "promote"
                    else {"private": FaultPlan(latency=0.15), "hub": FaultPlan(latency=0.15)},
                    prepare=prepare,
                    send=(signum, phase, delay),
                    expect_rc=(128 + signum,),
                )
            )
    return cases


def _append_dockerfile(text: str) -> Callable[[Ctx], None]:
    def prepare(ctx: Ctx) -> None:
        path = ctx.project / "hello" / "Dockerfile"
        _write("hello/Dockerfile", path.read_text() + text)(ctx)

    return prepare


def _misc_cases() -> list[Case]:
    return [
        Case(
            "rerun-reuses",
            "idempotency",
            "two runs of one commit tag one digest",
            runs=2,
            expect_rc=(0,),
            expect="reusing",
        ),
        Case(
            "rerun-both-registries",
            "idempotency",
            "a rerun with both registries",
            registries="both",
            runs=2,
            expect_rc=(0,),
            expect="reusing",
        ),
        Case(
            "cli-plan-bad-config",
            "cli",
            "`pipeline plan` of a bad config",
            args=("plan",),
            extra="platforms = []",
            expect="platform",
        ),
        Case(
            "cli-merge-no-platforms",
            "cli",
            "a merge file without platforms",
            args=("merge", "digest.json"),
            prepare=_merge_file,
            expect="platforms",
        ),
        Case(
            "cli-registry-port",
            "cli",
            "`registry up --port 70000`",
            args=("registry", "up", "--port", "70000"),
            expect="--port 70000",
        ),
        Case(
            "cli-build-missing-dockerfile",
            "cli",
            "`pipeline build` of a missing Dockerfile",
            args=("build", "--load"),
            prepare=_remove("hello/Dockerfile"),
            expect="does not exist",
        ),
        Case(
            "cli-smoke-bad-checks",
            "cli",
            "`pipeline smoke --checks` of an invalid file",
            args=("smoke", "127.0.0.1:9/x:1", "--checks", "hello/bad.yaml"),
            prepare=_write("hello/bad.yaml", "commandTests: 5\n"),
            expect="bad.yaml",
        ),
        Case(
            "cli-json-dry-run",
            "cli",
            "dry run with --json",
            args=("release", "--dry-run", "--json"),
            expect_rc=(0,),
        ),
        Case(
            "cli-markup-in-error",
            "cli",
            "an error holding rich markup [/x]",
            registries="none",
            tail='[[registries]]\nname = "r[/x]"\nurl = "127.0.0.1:9/x"\n',
            env={"PIPELINE_RETRY_ATTEMPTS": "1"},
            expect="r[/x]",
        ),
    ]


CONCURRENT = [
    ("concurrent-same-commit", "concurrency", "two releases of one commit at the same time"),
    (
        "concurrent-older-finishes-last",
        "concurrency",
        "an older clone releases after a newer release: latest stays",
    ),
    ("concurrent-older-and-newer", "concurrency", "an older and a newer release at the same time"),
]


def all_cases() -> list[Case]:
    return (
        _config_cases()
        + _preflight_cases()
        + _git_cases()
        + _env_cases()
        + _fault_cases()
        + _smoke_cases()
        + _signal_cases()
        + _misc_cases()
    )
