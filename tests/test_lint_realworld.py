"""Minimal reproductions, written for this project, of what `pipeline lint` got wrong on real Dockerfiles
(issue 14): each false-positive kind and each miss found by judging a corpus of public Dockerfiles by hand.
The corpus itself is other people's code and stays out of the repository; bench/lint_precision.py scores it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import LintConfig
from pipeline.dockerfile import parse
from pipeline.lint import Finding, LintOptions, Target, check_dockerfile, lint_targets
from pipeline.lint.context import BuildContext
from pipeline.lint.model import BuildModel
from pipeline.lint.rules import check_model


def found(text: str, **options: object) -> list[Finding]:
    return check_dockerfile(parse(text, "Dockerfile"), LintOptions(**options))  # type: ignore[arg-type]


def codes(text: str, **options: object) -> set[str]:
    return {f.code for f in found(text, **options)}


def in_context(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> list[Finding]:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    model = BuildModel(
        parse(dockerfile, str(tmp_path / "Dockerfile")),
        LintOptions(),
        BuildContext.load(tmp_path / "Dockerfile", tmp_path),
    )
    return check_model(model)


# ---------------------------------------------------------------------------------------------------------
# PL310/PL311: root that is given up, intended, or needed
# ---------------------------------------------------------------------------------------------------------

SERVICE = 'FROM alpine:3.20\nRUN apk add --no-cache {tool}\nCOPY entry.sh /entry.sh\nENTRYPOINT ["/entry.sh"]\nCMD ["serve"]\n'


@pytest.mark.parametrize(
    "script",
    [
        '#!/bin/sh\nchown -R app /data\nexec su-exec app "$@"\n',
        '#!/bin/sh\nset -e\nexec gosu 10001:10001 "$@"\n',
        '#!/bin/sh\nexec setpriv --reuid=10001 --regid=10001 --init-groups "$@"\n',
        '#!/bin/sh\nexec chroot --userspec=10001:10001 / "$@"\n',
    ],
)
def test_entrypoint_that_drops_privileges_satisfies_user(tmp_path: Path, script: str) -> None:
    text = SERVICE.format(tool="curl")
    assert "PL310" not in {f.code for f in in_context(tmp_path, text, {"entry.sh": script})}


def test_entrypoint_that_keeps_root_is_reported(tmp_path: Path) -> None:
    text = SERVICE.format(tool="curl")
    assert "PL310" in {f.code for f in in_context(tmp_path, text, {"entry.sh": '#!/bin/sh\nexec "$@"\n'})}


def test_privilege_drop_tool_installed_when_the_script_cannot_be_read() -> None:
    assert "PL310" not in codes(SERVICE.format(tool="su-exec"))
    assert "PL310" in codes(SERVICE.format(tool="curl"))


def test_user_created_for_an_entrypoint_script_that_cannot_be_read(tmp_path: Path) -> None:
    text = 'FROM alpine:3.20\nRUN adduser -D app\nCOPY entrypoint.sh /\nENTRYPOINT ["/entrypoint.sh"]\n'
    # Without the script, a user made but never named in USER says the entrypoint switches to it...
    assert "PL310" not in codes(text)
    # ...and with the script at hand, the linter reads what it does.
    assert "PL310" in {f.code for f in in_context(tmp_path, text, {"entrypoint.sh": "#!/bin/sh\nexec app\n"})}


def test_base_and_builder_images_meant_to_be_extended() -> None:
    assert "PL310" not in codes(
        "FROM debian:12\nRUN apt-get update && apt-get install -y gcc && rm -rf /var/lib/apt/lists/*\n"
    )
    assert "PL310" not in codes('FROM alpine:3.20\nRUN apk add --no-cache bash\nCMD ["/bin/sh"]\n')
    assert "PL310" in codes('FROM alpine:3.20\nCOPY app /app\nCMD ["/app"]\n')


def test_windows_images_are_not_asked_for_a_unix_user() -> None:
    assert "PL310" not in codes('FROM mcr.microsoft.com/windows/servercore:ltsc2022\nCMD ["app.exe"]\n')
    text = 'FROM company/tools:1.0\nSHELL ["powershell", "-Command"]\nCMD ["app.exe"]\n'
    assert "PL310" not in codes(text)


def test_images_that_must_run_as_root() -> None:
    assert "PL310" not in codes(
        'FROM alpine:3.20\nENTRYPOINT ["nsenter", "--target", "1", "--mount", "--"]\n'
    )
    # nginx and php-fpm start as root and run their workers as an unprivileged user themselves.
    assert "PL310" not in codes(
        'FROM nginx:1.27\nCOPY site /usr/share/nginx/html\nCMD ["nginx", "-g", "daemon off;"]\n'
    )
    assert "PL310" in codes('FROM php:8.3-fpm\nCOPY . /app\nCMD ["php", "artisan", "serve"]\n')


def test_supervisor_running_servers_that_drop_root_themselves() -> None:
    text = 'FROM php:8.3-fpm-alpine\nRUN apk add --no-cache nginx supervisor\nCOPY . /app\nENTRYPOINT ["/bin/sh", "/app/start.sh"]\n'
    assert "PL310" not in codes(text)
    assert "PL310" not in codes('FROM acme/php-nginx:8.1\nCOPY . /app\nCMD ["supervisord"]\n')


def test_build_tool_image_runs_on_a_mounted_workspace() -> None:
    text = (
        'FROM rust:1.80-alpine\nRUN apk add --no-cache musl-dev\nENTRYPOINT ["cargo", "build", "--locked"]\n'
    )
    assert "PL310" not in codes(text)


def test_image_that_drives_the_host_docker_engine_needs_root() -> None:
    text = 'FROM alpine:3.20\nRUN apk add --no-cache docker-cli\nCOPY app /app\nENTRYPOINT ["/app"]\n'
    assert "PL310" not in codes(text)


def test_root_required_by_a_privilege_dropping_entrypoint_is_not_pl311() -> None:
    text = 'FROM debian:12\nRUN apt-get update && apt-get install -y gosu && rm -rf /var/lib/apt/lists/*\nUSER root\nCOPY entry.sh /entry.sh\nENTRYPOINT ["/entry.sh"]\n'
    assert "PL311" not in codes(text)
    assert "PL311" in codes('FROM debian:12\nUSER root\nCMD ["serve"]\n')


def test_github_docker_action_runs_as_root(tmp_path: Path) -> None:
    text = 'FROM alpine:3.20\nCOPY entrypoint.sh /entrypoint.sh\nENTRYPOINT ["/entrypoint.sh"]\n'
    files = {"entrypoint.sh": "#!/bin/sh\necho hi\n", "action.yml": "runs:\n  using: docker\n"}
    assert "PL310" not in {f.code for f in in_context(tmp_path, text, files)}


# ---------------------------------------------------------------------------------------------------------
# PL401: the context as it is
# ---------------------------------------------------------------------------------------------------------


def test_small_dedicated_context_needs_no_dockerignore(tmp_path: Path) -> None:
    text = 'FROM alpine:3.20\nCOPY . /etc/app/\nUSER 1\nCMD ["app"]\n'
    result = {f.code for f in in_context(tmp_path, text, {"app.conf": "a=1\n", "entry.sh": "#!/bin/sh\n"})}
    assert "PL401" not in result


def test_repository_root_context_without_dockerignore(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    text = 'FROM alpine:3.20\nCOPY . /src\nUSER 1\nCMD ["app"]\n'
    result = {f.code for f in in_context(tmp_path, text, {"main.go": "package main\n", ".env": "X=1\n"})}
    assert {"PL401", "PL402"} <= result


def test_context_rules_need_a_copy_of_everything(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    text = 'FROM alpine:3.20\nCOPY app.conf /etc/app/\nUSER 1\nCMD ["app"]\n'
    result = {f.code for f in in_context(tmp_path, text, {"app.conf": "a=1\n", ".env": "X=1\n"})}
    assert not result & {"PL401", "PL402"}


# ---------------------------------------------------------------------------------------------------------
# PL501/PL502: what really runs under emulation
# ---------------------------------------------------------------------------------------------------------

SHIP = 'FROM alpine:3.20\nCOPY --from=build /out /out\nUSER 1\nCMD ["/out"]\n'


def test_compile_in_the_shipped_stage_is_not_pl501() -> None:
    # The toolchain built for the target is the product; $BUILDPLATFORM would ship the wrong architecture.
    text = (
        'FROM alpine:3.20\nRUN apk add --no-cache gcc make && make -C /usr/src/tool install\nCMD ["tool"]\n'
    )
    assert "PL501" not in codes(text)
    assert "PL501" not in codes('FROM golang:1.22\nCOPY . .\nRUN go build -o /app .\nCMD ["/app"]\n')


def test_pip_wheel_for_the_target_is_not_pl501() -> None:
    text = (
        "FROM python:3.12 AS build\nCOPY requirements.txt .\nRUN pip wheel -w /out -r requirements.txt\n"
        + SHIP
    )
    assert "PL501" not in codes(text)


def test_package_and_user_names_are_not_compilers() -> None:
    text = "FROM alpine:3.20 AS build\nRUN apk add --no-cache gcc make go && adduser -D make\n" + SHIP
    assert "PL501" not in codes(text)
    assert "PL501" in codes(text.replace("adduser -D make", "go build -o /out ."))


def test_build_platform_is_inherited_from_the_parent_stage() -> None:
    text = (
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS base\nCOPY go.mod go.sum ./\nRUN go mod download\n"
        "FROM base AS build\nCOPY . .\nARG TARGETOS TARGETARCH\nRUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out .\n"
        + SHIP
    )
    assert not codes(text) & {"PL501", "PL502"}


def test_one_platform_or_native_fan_out_emulates_nothing(tmp_path: Path) -> None:
    text = (
        "FROM golang:1.22 AS build\nCOPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\nRUN go build -o /out .\n"
        + SHIP
    )
    assert "PL501" in codes(text)
    assert "PL501" not in codes(text, multi_platform=False)
    assert "PL501" not in codes(text, native=True)
    (tmp_path / "Dockerfile").write_text(text)
    targets = [Target(tmp_path / "Dockerfile", None)]
    assert "PL501" not in {
        f.code for f in lint_targets(targets, LintConfig(hadolint=False, native_platforms=True)).findings
    }
    single = [Target(tmp_path / "Dockerfile", None, platforms=("linux/amd64",))]
    assert "PL501" not in {f.code for f in lint_targets(single, LintConfig(hadolint=False)).findings}


def test_unused_stage_is_not_built() -> None:
    text = 'FROM golang:1.22 AS tools\nRUN go build -o /t ./tools\nFROM alpine:3.20\nUSER 1\nCMD ["sh"]\n'
    assert "PL501" not in codes(text)


def test_target_arg_used_but_not_declared_is_pl502() -> None:
    text = (
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nARG TARGETOS\nCOPY . .\n"
        "RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out .\n" + SHIP
    )
    messages = [f.message for f in found(text) if f.code == "PL502"]
    assert len(messages) == 1 and "ARG TARGETARCH" in messages[0]


# ---------------------------------------------------------------------------------------------------------
# PL104: per-build args
# ---------------------------------------------------------------------------------------------------------


def test_pinned_version_args_are_not_per_build() -> None:
    assert "PL104" not in codes(
        "FROM debian:12\nARG GOSU_VERSION=1.17\nRUN apt-get update && apt-get install -y curl\nUSER 1\n"
    )


def test_arg_read_from_the_environment_by_a_later_run() -> None:
    assert "PL104" not in codes(
        "FROM golang:1.22\nARG VERSION\nRUN make release\nUSER 1\n", multi_platform=False
    )
    assert "PL104" not in codes("FROM alpine:3.20\nARG GIT_COMMIT\nRUN ./scripts/stamp.sh\nUSER 1\n")


def test_derived_arg_is_used_where_it_is_derived() -> None:
    text = "FROM node:20.1\nARG VERSION\nENV APP_VERSION=$VERSION\nRUN npm ci && npm cache clean --force\nUSER 1\n"
    assert "PL104" not in codes(text)


def test_per_build_arg_before_unrelated_steps_is_info() -> None:
    text = "FROM alpine:3.20\nARG GIT_SHA\nLABEL rev=$GIT_SHA\nRUN apk add --no-cache curl\nUSER 1\n"
    assert [(f.code, f.severity) for f in found(text) if f.code == "PL104"] == [("PL104", "info")]


# ---------------------------------------------------------------------------------------------------------
# PL303/PL301: base images through args
# ---------------------------------------------------------------------------------------------------------


def test_nested_arg_defaults_are_expanded() -> None:
    text = "ARG V=3.20\nARG BASE=alpine:${V}\nFROM ${BASE}\nUSER 1\n"
    assert not codes(text) & {"PL301", "PL302", "PL303"}
    assert "PL301" in codes("ARG V=latest\nARG BASE=alpine:${V}\nFROM ${BASE}\nUSER 1\n")


def test_automatic_platform_args_in_from() -> None:
    text = "FROM alpine:3.20 AS base-amd64\nFROM alpine:3.20 AS base-arm64\nFROM base-${TARGETARCH}\nUSER 1\n"
    assert not codes(text) & {"PL301", "PL303"}
    assert not codes("ARG TARGETARCH\nFROM ${TARGETARCH}/alpine:3.20\nUSER 1\n") & {"PL301", "PL303"}


def test_images_built_earlier_in_the_same_pipeline() -> None:
    assert not codes("FROM acme/base:edge\nUSER 1\n", own_images=("acme/base",)) & {"PL301", "PL302"}
    assert not codes("FROM localhost:5000/acme/base:edge\nUSER 1\n") & {"PL301", "PL302"}
    assert "PL302" in codes("FROM acme/base:edge\nUSER 1\n")
    assert not codes("ARG BASE_IMAGE=acme/app-base\nFROM ${BASE_IMAGE}\nUSER 1\n") & {"PL301", "PL302"}
    # A `base-*` tag of the project's own image, built by its own pipeline before this one.
    assert not codes("FROM acme/app:base-debian\nUSER 1\n") & {"PL301", "PL302"}


# ---------------------------------------------------------------------------------------------------------
# PL101: helpers beside manifests, cargo-chef, Go replace folders
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", ["pyproject.toml poetry.lock*", "package*.json", "requirements*.txt"])
def test_manifest_globs_are_manifests(manifest: str) -> None:
    install = {
        "pyproject.toml poetry.lock*": "poetry install",
        "package*.json": "npm ci",
        "requirements*.txt": "pip install --no-cache-dir -r requirements.txt",
    }[manifest]
    text = f"FROM python:3.12-slim\nCOPY {manifest} ./\nRUN {install}\nCOPY . .\nUSER 1\n"
    assert "PL101" not in codes(text)


def test_cargo_chef_cooks_dependencies_before_the_sources() -> None:
    text = (
        "FROM rust:1.80 AS chef\nRUN cargo install cargo-chef\nWORKDIR /app\n"
        "FROM chef AS planner\nCOPY . .\nRUN cargo chef prepare --recipe-path recipe.json\n"
        "FROM chef AS build\nCOPY --from=planner /app/recipe.json recipe.json\n"
        "RUN cargo chef cook --release --recipe-path recipe.json\nCOPY . .\nRUN cargo build --release\n"
        + SHIP
    )
    assert "PL101" not in codes(text)


def test_manifest_helpers_copied_beside_the_manifest() -> None:
    yarn = "FROM node:20.1\nCOPY package.json yarn.lock .yarnrc.yml ./\nCOPY .yarn ./.yarn\nRUN yarn install --immutable\nCOPY . .\nUSER 1\n"
    assert "PL101" not in codes(yarn)
    gradle = "FROM gradle:8.7 AS b\nCOPY gradlew settings.gradle build.gradle ./\nCOPY gradle ./gradle\nRUN ./gradlew dependencies\nCOPY src ./src\nRUN ./gradlew build\n"
    assert "PL101" not in codes(gradle)


def test_go_replace_folders_before_go_mod_download(tmp_path: Path) -> None:
    text = (
        "FROM golang:1.22 AS build\nCOPY go.mod go.sum ./\nCOPY libs/shared ./libs/shared\nRUN go mod download\n"
        "COPY . .\nRUN go build -o /out .\n" + SHIP
    )
    assert "PL101" not in codes(text)
    files = {"go.mod": "module x\n", "libs/shared/go.mod": "module shared\n", "main.go": "package main\n"}
    assert "PL101" not in {f.code for f in in_context(tmp_path, text, files)}
    # A source folder copied before a build (not a download) is still the sources.
    assert "PL101" in codes(text.replace("RUN go mod download\n", "RUN go build ./libs/shared\n"))


# ---------------------------------------------------------------------------------------------------------
# PL2xx: caches, read from the commands
# ---------------------------------------------------------------------------------------------------------


def test_tmpfs_mount_and_long_rm_options_clean_apt_lists() -> None:
    tmpfs = "FROM debian:12\nRUN --mount=type=tmpfs,target=/var/lib/apt/lists apt-get update && apt-get install -y curl\nUSER 1\n"
    assert "PL203" not in codes(tmpfs)
    long_rm = "FROM debian:12\nRUN apt-get update && apt-get install -y curl && rm --recursive --force /var/lib/apt/lists/*\nUSER 1\n"
    assert "PL203" not in codes(long_rm)
    npm = "FROM node:20.1\nCOPY package.json .\nRUN --mount=type=tmpfs,target=/root/.npm npm ci\nUSER 1\n"
    assert "PL205" not in codes(npm)


def test_tool_names_as_bare_words_are_not_installs() -> None:
    assert "PL205" not in codes("FROM node:20.1-alpine\nRUN apk add --no-cache yarn\nUSER 1\n")
    assert "PL205" not in codes("FROM node:20.1\nRUN yarn cache clean && yarn list\nUSER 1\n")
    assert "PL205" not in codes('FROM node:20.1\nRUN echo "run yarn install first" > /README\nUSER 1\n')


def test_text_inside_echo_is_not_a_pip_install() -> None:
    assert "PL204" not in codes(
        'FROM python:3.12\nRUN echo "pip install -r requirements.txt" > /HOWTO\nUSER 1\n'
    )
    assert "PL204" not in codes("FROM python:3.12\nRUN pip install --no-cache flask\nUSER 1\n")
    assert "PL204" not in codes(
        "FROM python:3.12\nRUN pip install --no-index --find-links /wheels /wheels/*\nUSER 1\n"
    )


def test_apk_update_leaves_its_index() -> None:
    assert "PL201" in codes("FROM alpine:3.20\nRUN apk update && apk add --no-cache curl\nUSER 1\n")
    assert "PL201" in codes("FROM alpine:3.20\nRUN apk update && apk upgrade\nUSER 1\n")


def test_pnpm_add_leaves_its_store() -> None:
    assert "PL205" in codes("FROM node:20.1\nRUN corepack enable && pnpm add express\nUSER 1\n")
    assert "PL205" not in codes("FROM node:20.1\nRUN pnpm add express && pnpm store prune\nUSER 1\n")


# ---------------------------------------------------------------------------------------------------------
# PL1xx misses
# ---------------------------------------------------------------------------------------------------------


def test_yarn_with_an_option_that_takes_a_value() -> None:
    text = "FROM node:20.1\nCOPY . .\nRUN yarn --network-timeout 100000\nUSER 1\n"
    assert [f.severity for f in found(text) if f.code == "PL101"] == ["error"]


@pytest.mark.parametrize("folder", ["frontend", "src-ui", "webapp"])
def test_source_folders_of_any_name(folder: str) -> None:
    text = f"FROM node:20.1\nCOPY package.json yarn.lock ./\nCOPY {folder} ./{folder}\nRUN yarn install\nUSER 1\n"
    assert "PL101" in codes(text)


def test_gradle_task_names_in_any_case() -> None:
    text = "FROM gradle:8.7-jdk17 AS build\nCOPY . .\nRUN ./gradlew bootjar --no-daemon\n" + SHIP
    assert "PL101" in codes(text)


def test_go_modules_fetched_by_make() -> None:
    text = "FROM golang:1.22 AS build\nCOPY . .\nRUN make build\n" + SHIP
    assert [(f.code, f.severity) for f in found(text) if f.code == "PL101"] == [("PL101", "warning")]


@pytest.mark.parametrize(
    ("tool", "install"),
    [
        ("pip install --no-cache-dir --upgrade pip", "pip install --no-cache-dir -r requirements.txt"),
        ("npm install -g pnpm", "pnpm install"),
    ],
)
def test_an_earlier_tool_install_does_not_hide_a_later_one(tool: str, install: str) -> None:
    text = f"FROM node:20.1\nRUN {tool}\nCOPY . .\nRUN {install}\nUSER 1\n"
    assert "PL101" in codes(text)


# ---------------------------------------------------------------------------------------------------------
# PL32x/PL33x
# ---------------------------------------------------------------------------------------------------------


def test_download_verified_in_the_next_run() -> None:
    text = (
        "FROM alpine:3.20\nADD https://downloads.acme.dev/tool-1.2.tgz /tmp/tool.tgz\n"
        'RUN echo "abc123  /tmp/tool.tgz" | sha256sum -c - && tar -xzf /tmp/tool.tgz -C /usr/local\nUSER 1\n'
    )
    assert "PL321" not in codes(text)
    assert "PL321" in codes(text.replace("sha256sum -c -", "cat"))


def test_placeholder_urls_are_not_secrets() -> None:
    assert "PL331" not in codes(
        "FROM alpine:3.20\nENV DATABASE_URL=postgres://app:password@localhost/app\nUSER 1\n"
    )
    assert "PL331" not in codes("FROM alpine:3.20\nRUN curl https://user:secret@example.com/x\nUSER 1\n")
    assert "PL331" in codes("FROM alpine:3.20\nRUN curl https://deploy:Xk29fq81@files.acme.dev/x\nUSER 1\n")


def test_public_keys_and_settings_only_npmrc(tmp_path: Path) -> None:
    text = "FROM node:20.1\nCOPY .npmrc signing.pem ./\nUSER 1\n"
    files = {
        ".npmrc": "registry=https://registry.npmjs.org/\nfund=false\n",
        "signing.pem": "-----BEGIN PUBLIC KEY-----\nabc\n",
    }
    assert "PL332" not in {f.code for f in in_context(tmp_path, text, files)}
    (tmp_path / "secret").mkdir()
    secret = {
        ".npmrc": "//registry.npmjs.org/:_authToken=abc\n",
        "signing.pem": "-----BEGIN PUBLIC KEY-----\n",
    }
    reported = [
        (f.code, f.severity) for f in in_context(tmp_path / "secret", text, secret) if f.code == "PL332"
    ]
    assert reported == [("PL332", "warning")]
    # Without the context the linter cannot tell: it says so at info level.
    assert [f.severity for f in found(text) if f.code == "PL332"] == ["info", "info"]


# ---------------------------------------------------------------------------------------------------------
# hadolint ignore comments silence our twin rule
# ---------------------------------------------------------------------------------------------------------


def test_hadolint_ignore_silences_the_twin(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("# hadolint ignore=DL3006\nFROM alpine\nUSER 1\n")
    report = lint_targets([Target(dockerfile, None)], LintConfig(hadolint=False))
    assert [f.code for f in report.findings] == []
    dockerfile.write_text(
        "# hadolint global ignore=DL3009\nFROM debian:12\nRUN apt-get update && apt-get install -y curl\nUSER 1\n"
    )
    assert lint_targets([Target(dockerfile, None)], LintConfig(hadolint=False)).findings == []
    dockerfile.write_text("# hadolint ignore=DL3008\nFROM alpine\nUSER 1\n")
    assert [
        f.code for f in lint_targets([Target(dockerfile, None)], LintConfig(hadolint=False)).findings
    ] == ["PL301"]


# ---------------------------------------------------------------------------------------------------------
# Second held-out corpus (53 public Dockerfiles judged before any change): each wrong kind, the miss, the crash
# ---------------------------------------------------------------------------------------------------------


def test_exposed_port_without_entrypoint_or_cmd_is_judged_not_crashed() -> None:
    # EXPOSE but no ENTRYPOINT/CMD: the base's program runs a service, as root.
    assert "PL310" in codes("FROM ruby:3.3\nWORKDIR /app\nCOPY . .\nEXPOSE 3000\n")


def test_apache_started_by_apache2ctl_drops_root_itself() -> None:
    text = 'FROM php:8.3-apache\nCOPY . /var/www/html\nCMD ["apache2ctl", "-D", "FOREGROUND"]\n'
    assert "PL310" not in codes(text)


def test_chiseled_images_run_as_a_non_root_user() -> None:
    ship = 'FROM mcr.microsoft.com/dotnet/aspnet:8.0-{variant}\nCOPY app /app\nENTRYPOINT ["/app/api"]\n'
    assert "PL310" not in codes(ship.format(variant="jammy-chiseled"))
    assert "PL310" in codes(ship.format(variant="alpine"))


def test_build_daemon_needs_root() -> None:
    assert "PL310" not in codes('FROM alpine:3.20\nCOPY buildkitd /usr/bin/\nENTRYPOINT ["buildkitd"]\n')


@pytest.mark.parametrize(
    ("base", "moves"),
    [("debian:wheezy", False), ("node:carbon", False), ("node:hydrogen-alpine", False), ("debian:sid", True)],
)
def test_release_codenames_name_a_version(base: str, moves: bool) -> None:
    assert ("PL302" in codes(f"FROM {base}\nUSER 1\n")) is moves


def test_asking_a_package_manager_its_version_is_not_an_install() -> None:
    smoke = "FROM node:20.11\nCOPY . .\nRUN yarn --version && bundle -v\nUSER 1\n"
    assert codes(smoke) & {"PL101", "PL205"} == set()
    assert {"PL101", "PL205"} <= codes("FROM node:20.11\nCOPY . .\nRUN yarn\nUSER 1\n")


def test_offline_install_from_a_fetched_store_downloads_nothing() -> None:
    text = (
        "FROM node:20.11\nCOPY pnpm-lock.yaml ./\nRUN pnpm fetch\nCOPY . .\n"
        "RUN pnpm install --offline\nUSER 1\n"
    )
    assert [f.line for f in found(text) if f.code == "PL205"] == [3]


@pytest.mark.parametrize(
    "wrapper",
    [
        "FROM --platform=$BUILDPLATFORM tonistiigi/xx:golang AS xx\n{build}COPY --from=xx / /\n",
        "{build}COPY --from=tonistiigi/xx:1.4 / /\nRUN xx-go --wrap\n",
    ],
)
def test_go_wrapped_by_xx_builds_for_the_target(wrapper: str) -> None:
    build = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n"
    head = wrapper.format(build=build)
    compile_ = "COPY . .\nRUN go build -o /out .\n"
    assert "PL502" not in codes(head + "ARG TARGETPLATFORM\n" + compile_ + SHIP)
    # The wrapper reads TARGETPLATFORM from the environment: without the ARG it builds for the build machine.
    assert "PL502" in codes(head + compile_ + SHIP)


def test_cargo_src_folder_is_the_sources_not_a_workspace_member() -> None:
    build = "FROM rust:1.80 AS build\nCOPY Cargo.toml Cargo.lock ./\nCOPY {folder} ./{folder}\nRUN cargo build --release\n"
    assert "PL101" in codes(build.format(folder="src") + SHIP)
    assert "PL101" not in codes(build.format(folder="api") + SHIP)


# ---------------------------------------------------------------------------------------------------------
# No crash on odd input (the corpus measure counts crashes; this keeps it at 0 for shapes it did not have)
# ---------------------------------------------------------------------------------------------------------

_PIECES = [
    "FROM alpine:3.20 AS a",
    "FROM --platform=$BUILDPLATFORM a AS b",
    "FROM ${BASE}",
    "ARG BASE=alpine:${V}",
    "COPY . .",
    "COPY --from=a / /",
    "ADD https://x.dev/a.tgz /",
    'RUN sh -c "apk add x && make"',
    "RUN <<EOF\nnpm ci\nEOF",
    "RUN --mount=type=cache,target=/root/.npm npm ci",
    'ENTRYPOINT ["/e.sh"]',
    "USER root",
    "ENV A=1 B",
    "RUN echo 'unbalanced",
    "RUN yarn --cwd",
    "EXPOSE 80",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=30)), max_size=12))
def test_never_crashes(lines: list[str]) -> None:
    for finding in found("\n".join(lines) + "\n"):
        assert finding.code.startswith("PL")
