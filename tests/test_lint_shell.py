"""RUN commands read as words (pipeline.lint.shell) and what they do (pipeline.lint.commands)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.lint.commands import compile_step, dependency_install, os_install
from pipeline.lint.shell import Command, commands, exec_commands


def names(script: str) -> list[str]:
    return [c.name for c in commands(script)]


def test_operators_split_simple_commands() -> None:
    assert names("apk add --no-cache make gcc && make build; go test ./... | tee log || true") == [
        "apk",
        "make",
        "go",
        "tee",
        "true",
    ]


def test_quoted_text_is_one_argument() -> None:
    [echo] = commands('echo "pip install x && npm ci" > /README 2>&1')
    assert echo == Command("echo", ("pip install x && npm ci",))


def test_keywords_assignments_and_wrappers_are_peeled() -> None:
    assert names("if [ -f x ]; then FOO=1 sudo -u app env A=b npm ci; fi") == ["[", "npm"]
    assert names("set -eux; cd /app && (cd web; exec yarn install)") == ["set", "cd", "cd", "yarn"]
    assert names("xargs -r apk add < packages.txt") == ["apk"]


def test_sh_dash_c_is_read_as_its_script() -> None:
    assert names("sh -c 'go mod download && go build ./...'") == ["go", "go"]
    assert [c.name for c in exec_commands(["/bin/bash", "-c", "pnpm install"])] == ["pnpm"]
    assert [c.name for c in exec_commands(["apk", "add", "curl"])] == ["apk"]


def test_heredoc_bodies_are_scripts_of_many_lines() -> None:
    script = "set -e\n# a comment mentioning npm install\napk add \\\n  curl\nmake\n"
    assert names(script) == ["set", "apk", "make"]


def test_unbalanced_quotes_do_not_raise() -> None:
    assert names("echo 'oops && apk add curl") == ["echo", "apk"]


@given(st.text(max_size=200))
def test_never_raises(text: str) -> None:
    for command in commands(text):
        assert isinstance(command.name, str)


def test_options_with_values_and_prefixes() -> None:
    [yarn] = commands("yarn --network-timeout 100000 --frozen-lockfile")
    assert yarn.subcommand(("--network-timeout",)) is None
    [pip] = commands("pip install --no-cache flask")
    assert pip.option_prefix("--no-cache-dir", "--no-cache")
    [apt] = commands("apt-get -qq -y install curl")
    assert apt.option("-y") and apt.subcommand() == "install"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("npm ci", ("npm", "manifest")),
        ("npm install express", ("npm", "packages")),
        ("npm i -g pnpm", ("npm", "tool")),
        ("yarn", ("yarn", "manifest")),
        ("yarn --network-timeout 600000", ("yarn", "manifest")),
        ("yarn add lodash", ("yarn", "packages")),
        ("yarn cache clean", None),
        ("pnpm add express", ("pnpm", "packages")),
        ("python3 -m pip install -r requirements.txt", ("pip", "manifest")),
        ("pip install --upgrade pip setuptools", ("pip", "tool")),
        ("pip wheel --wheel-dir /w /src", ("pip", "manifest")),
        ("go mod download", ("go", "manifest")),
        ("go run build.go build", ("go", "implicit")),
        ("go install golang.org/x/tools/cmd/stringer@v0.20.0", ("go", "tool")),
        ("cargo chef cook --release --recipe-path recipe.json", ("cargo", "manifest")),
        ("cargo chef prepare --recipe-path recipe.json", None),
        ("cargo install cargo-chef", ("cargo", "tool")),
        ("cargo install --path .", ("cargo", "implicit")),
        ("./mvnw -B dependency:go-offline", ("maven", "manifest")),
        ("./gradlew --no-daemon bootJar", ("gradle", "implicit")),
        ("bundle install", ("bundler", "manifest")),
        ("composer install --no-dev", ("composer", "manifest")),
        ("echo npm ci", None),
    ],
)
def test_dependency_installs(script: str, expected: tuple[str, str] | None) -> None:
    [command] = commands(script)
    found = dependency_install(command)
    assert (None if found is None else (found.ecosystem, found.kind)) == expected


def test_make_fetches_go_modules_only_in_a_go_stage() -> None:
    [make] = commands("make build")
    assert dependency_install(make) is None
    found = dependency_install(make, go_stage=True)
    assert found is not None and (found.ecosystem, found.kind) == ("go", "implicit")


def test_os_installs() -> None:
    assert [
        os_install(c)
        for c in commands("apk --no-cache add git && apt-get -y install curl && dnf install -y x")
    ] == [
        True,
        True,
        True,
    ]
    assert not any(os_install(c) for c in commands("apk del git; apt-get update; pip install apk"))


def test_compile_steps() -> None:
    steps = [
        compile_step(c) for c in commands("apk add gcc && adduser -D make && go build -o /a . && pip wheel .")
    ]
    assert steps == [None, None, ("go build", True, True), ("pip wheel", False, True)]
    assert compile_step(commands("yarn build")[0]) == ("yarn run build", True, False)
    assert compile_step(commands("go run build.go build")[0]) is None
