"""The Dockerfile parser: line ranges, directives, continuations, heredocs, flags, forms and stages."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pipeline.dockerfile import expand, parse, parse_file, split_words


def test_directives_and_escape() -> None:
    df = parse("# syntax=docker/dockerfile:1.7\n# escape=`\nFROM alpine:3.20\nRUN echo a `\n    b\n")
    assert df.directives == {"syntax": "docker/dockerfile:1.7", "escape": "`"}
    assert df.escape == "`"
    run = df.instructions[1]
    assert run.keyword == "RUN"
    assert run.arguments == "echo a b"
    assert (run.start_line, run.end_line) == (4, 5)


def test_directive_after_comment_is_a_comment() -> None:
    df = parse("# a comment\n# escape=`\nFROM alpine:3.20\nRUN echo \\\n  x\n")
    assert df.directives == {}
    assert df.escape == "\\"
    assert df.instructions[1].arguments == "echo x"


def test_invalid_escape_is_reported() -> None:
    df = parse("# escape=x\nFROM scratch\n")
    assert df.escape == "\\"
    assert any("escape" in message for _, message in df.problems)


def test_continuations_with_comments_and_blank_lines() -> None:
    text = "FROM debian:12\nRUN apt-get update \\\n# why: pinned\n\n    && apt-get install -y curl \\\n    && true\nUSER 1\n"
    df = parse(text)
    run = df.instructions[1]
    assert run.arguments == "apt-get update && apt-get install -y curl && true"
    assert (run.start_line, run.end_line) == (2, 6)
    assert run.comments == ((3, "# why: pinned"),)
    assert df.instructions[2].start_line == 7


def test_trailing_blanks_after_escape_still_continue() -> None:
    df = parse("FROM scratch\nCOPY a \\   \n  /b\n")
    assert df.instructions[1].words() == ["a", "/b"]


def test_heredoc_run_and_copy() -> None:
    text = (
        "FROM alpine:3.20\n"
        "RUN <<EOF\nset -e\napk add --no-cache curl\nEOF\n"
        "COPY <<-'CONF' /etc/x.conf\n\tkey = $value\n\tCONF\n"
        "USER 1\n"
    )
    df = parse(text)
    run, copy, user = df.instructions[1:]
    assert run.heredocs[0].delimiter == "EOF"
    assert run.heredocs[0].body == "set -e\napk add --no-cache curl"
    assert (run.start_line, run.end_line) == (2, 5)
    assert "apk add --no-cache curl" in run.command_text
    assert copy.heredocs[0].quoted and copy.heredocs[0].strip_tabs
    assert copy.heredocs[0].body == "key = $value"
    assert (copy.start_line, copy.end_line) == (6, 8)
    assert user.start_line == 9
    assert df.problems == []


def test_heredoc_body_is_not_parsed_as_instructions() -> None:
    df = parse("FROM alpine:3.20\nCOPY <<EOF /x\nFROM evil:latest\n# not a comment\nEOF\n")
    assert len(df.stages) == 1
    assert [i.keyword for i in df.instructions] == ["FROM", "COPY"]
    assert all("not a comment" not in text for _, text in df.comments)


def test_two_heredocs_in_one_run() -> None:
    df = parse("FROM alpine:3.20\nRUN <<A cat - && sh <<B\none\nA\necho two\nB\nUSER 1\n")
    run = df.instructions[1]
    assert [h.body for h in run.heredocs] == ["one", "echo two"]
    assert run.end_line == 6


def test_unclosed_heredoc_is_a_problem() -> None:
    df = parse("FROM alpine:3.20\nRUN <<EOF\necho never closed\n")
    assert df.problems and "never closed" in df.problems[0][1]


def test_here_string_and_shift_are_not_heredocs() -> None:
    df = parse("FROM bash:5\nRUN cat <<< word && echo $((1<<2))\nUSER 1\n")
    assert df.instructions[1].heredocs == ()
    assert df.instructions[2].keyword == "USER"


def test_flags_mounts_and_platform() -> None:
    text = (
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\n"
        "RUN --mount=type=cache,target=/go/pkg/mod --mount=type=bind,source=go.mod,target=go.mod go mod download\n"
        "COPY --from=build --chown=10001:10001 --link /out/app /app\n"
    )
    df = parse(text)
    stage = df.stages[0]
    assert stage.name == "Build" and stage.platform == "$BUILDPLATFORM" and stage.base == "golang:1.22"
    run = df.instructions[1]
    assert run.mounts() == [
        {"type": "cache", "target": "/go/pkg/mod"},
        {"type": "bind", "source": "go.mod", "target": "go.mod"},
    ]
    assert run.arguments == "go mod download"
    copy = df.instructions[2]
    assert copy.flag("from") is not None and copy.flag("from").value == "build"  # type: ignore[union-attr]
    assert copy.flag("link") is not None and copy.flag("link").value is None  # type: ignore[union-attr]
    assert copy.words() == ["/out/app", "/app"]
    assert df.stage_by_name("build") is stage


def test_exec_form_versus_shell_form() -> None:
    df = parse('FROM scratch\nCMD ["/app", "--port", "8080"]\nENTRYPOINT /app --x\nCMD [not json]\n')
    assert df.instructions[1].exec_form == ("/app", "--port", "8080")
    assert df.instructions[2].exec_form is None
    assert df.instructions[3].exec_form is None


def test_arg_before_from_and_stages() -> None:
    text = "ARG BASE=alpine:3.20\nARG FLAVOUR\nFROM ${BASE} AS one\nRUN true\nFROM one\nUSER 1\n"
    df = parse(text)
    assert df.global_args == {"BASE": "alpine:3.20", "FLAVOUR": None}
    assert df.resolve_base(df.stages[0]) == "alpine:3.20"
    assert df.parent_stage(df.stages[1]) is df.stages[0]
    assert [i.stage for i in df.instructions] == [-1, -1, 0, 0, 1, 1]
    assert df.final_stage is df.stages[1]


def test_instruction_before_from_is_a_problem() -> None:
    df = parse("RUN echo hi\nFROM scratch\n")
    assert df.problems and "before the first FROM" in df.problems[0][1]


def test_lowercase_keywords_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"from alpine:3.20\r\nrun echo \\\r\n  hi\r\nuser 1\r\n")
    df = parse_file(path)
    assert [i.keyword for i in df.instructions] == ["FROM", "RUN", "USER"]
    assert df.instructions[1].arguments == "echo hi"


def test_expand_forms() -> None:
    variables: dict[str, str | None] = {"A": "x", "EMPTY": "", "UNSET": None}
    assert expand("$A ${A} ${A:-d} ${NOPE:-d} ${EMPTY:-d} ${EMPTY-d} ${A:+y} ${NOPE:+y}", variables) == (
        "x x x d d  y "
    )
    assert expand("${UNSET}/$NOPE", variables) == "${UNSET}/$NOPE"


def test_split_words_tolerates_unbalanced_quotes() -> None:
    assert split_words('a "b c"') == ["a", "b c"]
    assert split_words('a "b') == ["a", '"b']


@given(st.text(alphabet=st.sampled_from(list("FROMRUNCOPY \\\n#<>EOF-=[]\"'`$\t{}ab")), max_size=300))
def test_parser_never_raises_and_ranges_are_ordered(text: str) -> None:
    df = parse(text)
    previous_end = 0
    for instruction in df.instructions:
        assert 1 <= instruction.start_line <= instruction.end_line
        assert instruction.start_line > previous_end
        previous_end = instruction.end_line


def test_resolve_base_expands_nested_defaults_and_automatic_args() -> None:
    df = parse("ARG V=3.20\nARG BASE=alpine:${V}\nFROM ${BASE}\nFROM base-${TARGETARCH}\n")
    assert df.resolve_base(df.stages[0]) == "alpine:3.20"
    assert df.resolve_base(df.stages[1]) == "base-amd64"
    # A global ARG that names an automatic arg without a default keeps BuildKit's value.
    df = parse("ARG TARGETARCH\nFROM ${TARGETARCH}/alpine:3.20\n")
    assert df.resolve_base(df.stages[0]) == "amd64/alpine:3.20"
