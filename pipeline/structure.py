"""container-structure-test (CST) YAML, schemaVersion 2.0.0, read strictly, plus our running-container checks.

Files written for CST's `test --image` run here unchanged with the same verdicts; `pipeline.smoke` runs them.
Like CST (whose YAML decoder is strict), an unknown key or a value of the wrong type refuses the whole file,
but here the message names FILE:LINE and the key path so that it can be fixed without guessing.

Extension (CST rejects these keys, so a file that uses them is ours only):

    platformCheck: false          # skip the built-in `uname -m` check (images without uname)
    serviceTests:
      - name: http answers
        port: 8080                # container port to publish on 127.0.0.1
        wait: auto                # healthy | port | auto (healthy when the image has a HEALTHCHECK)
        startupTimeout: 60        # seconds, bounded further by the run's per-check timeout
        args: ["-v"]              # replaces CMD; the image's own ENTRYPOINT always runs
        envVars: [{key: K, value: V}]
        requests:
          - path: /
            method: GET
            status: 200
            expectedBody: ["smoke ok"]
            excludedBody: ["error"]
            headers: {Accept: text/html}
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError

SCHEMA_VERSION = "2.0.0"
EXECUTABLE_BY = ("owner", "group", "other", "any")
WaitMode = Literal["healthy", "port", "auto"]
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


@dataclass(frozen=True)
class EnvVar:
    key: str
    value: str
    is_regex: bool = False


@dataclass(frozen=True)
class CommandTest:
    name: str
    command: str
    line: int
    args: tuple[str, ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()
    teardown: tuple[tuple[str, ...], ...] = ()
    env_vars: tuple[EnvVar, ...] = ()
    expected_output: tuple[str, ...] = ()
    excluded_output: tuple[str, ...] = ()
    expected_error: tuple[str, ...] = ()
    excluded_error: tuple[str, ...] = ()
    exit_code: int = 0


@dataclass(frozen=True)
class FileExistenceTest:
    name: str
    path: str
    line: int
    should_exist: bool = True  # CST's default too: a test that only names a path asserts that it exists
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None
    is_executable_by: str = ""


@dataclass(frozen=True)
class FileContentTest:
    name: str
    path: str
    line: int
    expected_contents: tuple[str, ...] = ()
    excluded_contents: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetadataTest:
    line: int
    env_vars: tuple[EnvVar, ...] = ()
    unbound_env_vars: tuple[str, ...] = ()
    labels: tuple[EnvVar, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    exposed_ports: tuple[str, ...] = ()
    unexposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    unmounted_volumes: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""


@dataclass(frozen=True)
class ContainerRunOptions:
    user: str = ""
    privileged: bool = False
    allocate_tty: bool = False
    env_vars: tuple[str, ...] = ()  # names read from the caller's environment
    env_file: str = ""
    capabilities: tuple[str, ...] = ()
    bind_mounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpRequest:
    path: str = "/"
    method: str = "GET"
    status: int = 200
    expected_body: tuple[str, ...] = ()
    excluded_body: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ServiceTest:
    name: str
    line: int
    port: int | None = None
    wait: WaitMode = "auto"
    startup_timeout: float = 60.0
    args: tuple[str, ...] | None = None
    env_vars: tuple[EnvVar, ...] = ()
    requests: tuple[HttpRequest, ...] = ()


@dataclass(frozen=True)
class Suite:
    path: Path
    global_env_vars: tuple[EnvVar, ...] = ()
    command_tests: tuple[CommandTest, ...] = ()
    file_existence_tests: tuple[FileExistenceTest, ...] = ()
    file_content_tests: tuple[FileContentTest, ...] = ()
    metadata_test: MetadataTest | None = None
    container_run_options: ContainerRunOptions = field(default_factory=ContainerRunOptions)
    service_tests: tuple[ServiceTest, ...] = ()
    platform_check: bool = True

    @property
    def check_count(self) -> int:
        return (
            len(self.command_tests)
            + len(self.file_existence_tests)
            + len(self.file_content_tests)
            + (1 if self.metadata_test is not None else 0)
            + len(self.service_tests)
        )


# --- Go semantics CST relies on -----------------------------------------------------------------------------

_SHELL_SPECIAL = frozenset("*#$@!?-0123456789")


def _is_name_char(char: str) -> bool:
    return char == "_" or (char.isascii() and char.isalnum())


def expand(text: str, lookup: Callable[[str], str]) -> str:
    """`$VAR`/`${VAR}` substitution by Go's os.Expand rules, which CST applies to args, paths and env values.

    Unknown names become empty, `$$` and `$1` are shell specials (empty too), a lone `$` stays, `${}` goes.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        rest = text[i + 1 :]
        if rest[0] == "{":
            if len(rest) > 2 and rest[1] in _SHELL_SPECIAL and rest[2] == "}":
                out.append(lookup(rest[1]))
                i += 4
                continue
            close = rest.find("}")
            if close == -1:
                i += 2  # "${" without a closing brace is eaten, as Go does
            elif close == 1:
                i += 3
            else:
                out.append(lookup(rest[1:close]))
                i += close + 2
            continue
        if rest[0] in _SHELL_SPECIAL:
            out.append(lookup(rest[0]))
            i += 2
            continue
        end = 0
        while end < len(rest) and _is_name_char(rest[end]):
            end += 1
        if end == 0:
            out.append("$")
            i += 1
        else:
            out.append(lookup(rest[:end]))
            i += end + 1
    return "".join(out)


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


def _go_to_python(pattern: str) -> str:
    """Rewrite the RE2 constructs whose meaning differs in Python's `re`.

    The one that matters in practice: without (?m), Go's `$` matches only at the very end of the text, while
    Python's also matches before a final newline, so `^ok$` against "ok\\n" fails in CST and must fail here.
    """
    out: list[str] = []
    # One entry per open group: the multiline state to restore and how many flag groups we opened inside it.
    saved: list[bool] = [False]
    extra: list[int] = [0]
    multiline = False
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "Q" and not in_class:
                end = pattern.find("\\E", i + 2)
                out.append(re.escape(pattern[i + 2 :] if end == -1 else pattern[i + 2 : end]))
                i = len(pattern) if end == -1 else end + 2
                continue
            if nxt == "Z":
                raise re.error("invalid escape sequence \\Z (RE2 has only \\z)")
            if nxt in "123456789" or (nxt == "k" and not in_class):
                raise re.error(f"backreference \\{nxt} is not supported by RE2 (container-structure-test)")
            out.append("\\Z" if nxt == "z" else pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if pattern.startswith("[:", i) and ":]" in pattern[i + 2 :]:
                close = pattern.index(":]", i + 2)
                name = pattern[i + 2 : close]
                body = _POSIX_CLASSES.get(name)
                if body is None:
                    raise re.error(f"unsupported character class [:{name}:]")
                out.append(body)
                i = close + 2
                continue
            if char == "]":
                in_class = False
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            i += 1
            # A leading "]" (after an optional "^") is a literal in both dialects, not the class's end.
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("\\]")
                i += 1
            continue
        if char == "(":
            _reject_re2_unsupported_group(pattern[i:])
            flags = re.match(r"\(\?([imsU]*)(?:-([imsU]*))?([:)])", pattern[i:])
            if flags and (flags.group(1) or flags.group(2) is not None):
                on, off, closer = flags.group(1), flags.group(2) or "", flags.group(3)
                if "U" in on + off:
                    raise re.error("the ungreedy flag U has no equivalent here")
                value = True if "m" in on else False if "m" in off else multiline
                spec = on + (f"-{off}" if off else "")
                if closer == ")":
                    # Go lets flags start mid-group and run to its end; Python only scopes them, so open a
                    # group here and close it where the enclosing group closes.
                    out.append(f"(?{spec}:" if spec else "(?:")
                    extra[-1] += 1
                    multiline = value
                else:
                    out.append(f"(?{spec}:" if spec else "(?:")
                    saved.append(multiline)
                    extra.append(0)
                    multiline = value
                i += flags.end()
                continue
            saved.append(multiline)
            extra.append(0)
            out.append(char)
            i += 1
            continue
        if char == ")" and len(saved) > 1:
            out.append(")" * extra.pop() + ")")
            multiline = saved.pop()
            i += 1
            continue
        if char == "$" and not multiline:
            out.append("(?!(?s:.))")  # the absolute end of the text, never before a trailing newline
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out) + ")" * extra[0]


# Perl features RE2 refuses: container-structure-test (Go's regexp) fails on them, so must we.
_RE2_UNSUPPORTED_GROUPS = (
    ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"),
    ("(?=", "lookahead"),
    ("(?!", "negative lookahead"),
    ("(?>", "atomic group"),
    ("(?P=", "named backreference"),
    ("(?#", "comment group"),
)


def _reject_re2_unsupported_group(text: str) -> None:
    for opening, name in _RE2_UNSUPPORTED_GROUPS:
        if text.startswith(opening):
            raise re.error(f"{name} {opening}...) is not supported by RE2 (container-structure-test)")


def compile_go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regular expression as CST does, searched anywhere in the text (Go's MatchString)."""
    # RE2's \d, \w, \s and \b are ASCII-only.
    return re.compile(_go_to_python(pattern), re.ASCII)


def go_search(pattern: str, text: str) -> bool:
    return compile_go_regex(pattern).search(text) is not None


# --- strict YAML walking with line numbers ------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, key_path: str, problem: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(f"{self.path}:{line}: {key_path or '(top level)'}: {problem}")

    def mapping(
        self, node: yaml.Node, key_path: str, known: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key_path, f"wrong type: expected a mapping, got {_kind(node)}")
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, key_path, "keys must be plain names")
            key = str(key_node.value)
            where = f"{key_path}.{key}" if key_path else key
            if key not in known:
                hint = _closest(key, known)
                raise self.fail(
                    key_node,
                    where,
                    f"unknown key{f' (did you mean {hint!r}?)' if hint else ''}; known: {', '.join(known)}",
                )
            if key in result:
                raise self.fail(key_node, where, "key given twice; keep one")
            result[key] = value_node
        for key in required:
            if key not in result:
                raise self.fail(node, f"{key_path}.{key}" if key_path else key, "required key is missing")
        return result

    def sequence(self, node: yaml.Node, key_path: str) -> list[yaml.Node]:
        if _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key_path, f"wrong type: expected a list, got {_kind(node)}")
        return list(node.value)

    def string(self, node: yaml.Node, key_path: str, *, non_empty: bool = False) -> str:
        # Go's yaml decoder takes any scalar's text for a string field (`port: 8080` is "8080"), so we do too.
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, key_path, f"wrong type: expected a string, got {_kind(node)}")
        value = "" if _is_null(node) else str(node.value)
        if non_empty and not value:
            raise self.fail(node, key_path, "must not be empty")
        return value

    def integer(self, node: yaml.Node, key_path: str) -> int:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int"):
            raise self.fail(node, key_path, f"wrong type: expected an integer, got {_kind(node)}")
        return int(yaml.safe_load(node.value))

    def number(self, node: yaml.Node, key_path: str) -> float:
        if not (
            isinstance(node, yaml.ScalarNode)
            and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
        ):
            raise self.fail(node, key_path, f"wrong type: expected a number, got {_kind(node)}")
        return float(yaml.safe_load(node.value))

    def boolean(self, node: yaml.Node, key_path: str) -> bool:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool"):
            raise self.fail(node, key_path, f"wrong type: expected true or false, got {_kind(node)}")
        return bool(yaml.safe_load(node.value))

    def opt_string(self, fields: dict[str, yaml.Node], key: str, where: str, default: str = "") -> str:
        return self.string(fields[key], f"{where}.{key}") if key in fields else default

    def opt_bool(self, fields: dict[str, yaml.Node], key: str, where: str, default: bool) -> bool:
        return self.boolean(fields[key], f"{where}.{key}" if where else key) if key in fields else default

    def opt_int(self, fields: dict[str, yaml.Node], key: str, where: str) -> int | None:
        return self.integer(fields[key], f"{where}.{key}") if key in fields else None

    def strings(self, node: yaml.Node, key_path: str) -> tuple[str, ...]:
        return tuple(
            self.string(item, f"{key_path}[{i}]") for i, item in enumerate(self.sequence(node, key_path))
        )

    def regexes(self, node: yaml.Node, key_path: str) -> tuple[str, ...]:
        patterns = self.strings(node, key_path)
        for i, (pattern, item) in enumerate(zip(patterns, self.sequence(node, key_path), strict=True)):
            self.check_regex(item, f"{key_path}[{i}]", pattern)
        return patterns

    def check_regex(self, node: yaml.Node, key_path: str, pattern: str) -> None:
        try:
            compile_go_regex(pattern)
        except re.error as error:
            raise self.fail(node, key_path, f"invalid regular expression {pattern!r}: {error}") from None

    def env_vars(
        self, node: yaml.Node, key_path: str, *, allow_regex: bool, need_value: bool = True
    ) -> tuple[EnvVar, ...]:
        result: list[EnvVar] = []
        known = ("key", "value", "isRegex") if allow_regex else ("key", "value")
        for i, item in enumerate(self.sequence(node, key_path)):
            where = f"{key_path}[{i}]"
            fields = self.mapping(item, where, known, ("key", "value") if need_value else ("key",))
            key = self.string(fields["key"], f"{where}.key", non_empty=True)
            value = self.string(fields["value"], f"{where}.value") if "value" in fields else ""
            is_regex = self.boolean(fields["isRegex"], f"{where}.isRegex") if "isRegex" in fields else False
            if is_regex:
                self.check_regex(fields["value"], f"{where}.value", value)
            result.append(EnvVar(key, value, is_regex))
        return tuple(result)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = str(node.tag).rsplit(":", 1)[-1]
    return f"{tag} {node.value!r}"


def _closest(key: str, known: tuple[str, ...]) -> str | None:
    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- the schema ---------------------------------------------------------------------------------------------

_TOP = (
    "schemaVersion",
    "globalEnvVars",
    "commandTests",
    "fileExistenceTests",
    "fileContentTests",
    "metadataTest",
    "licenseTests",
    "containerRunOptions",
    "serviceTests",
    "platformCheck",
)
_COMMAND = (
    "name",
    "setup",
    "teardown",
    "envVars",
    "exitCode",
    "command",
    "args",
    "expectedOutput",
    "excludedOutput",
    "expectedError",
    "excludedError",
)
_EXISTENCE = ("name", "path", "shouldExist", "permissions", "uid", "gid", "isExecutableBy")
_CONTENT = ("name", "path", "expectedContents", "excludedContents")
_METADATA = (
    "envVars",
    "unboundEnvVars",
    "labels",
    "entrypoint",
    "cmd",
    "exposedPorts",
    "unexposedPorts",
    "volumes",
    "unmountedVolumes",
    "workdir",
    "user",
)
_RUN_OPTIONS = ("user", "privileged", "allocateTty", "envVars", "envFile", "capabilities", "bindMounts")
_SERVICE = ("name", "port", "wait", "startupTimeout", "args", "envVars", "requests")
_REQUEST = ("path", "method", "status", "expectedBody", "excludedBody", "headers")
_PERMISSIONS = re.compile(r"^[dalTLDpSugct?]*-?[r-][w-][x-][r-][w-][x-][r-][w-][x-]$")


def load_suite(path: Path) -> Suite:
    """Read and validate one CST file; any problem is a ConfigError naming FILE:LINE and the key path."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the smoke checks ({error.strerror}); fix the path") from None
    return parse_suite(text, path)


def parse_suite(text: str, path: Path) -> Suite:
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: not valid YAML: {error.problem}") from None
    if root is None:
        raise ConfigError(f"{path}:1: empty file; it needs at least `schemaVersion: {SCHEMA_VERSION}`")
    top = reader.mapping(root, "", _TOP)
    if "schemaVersion" not in top:
        raise reader.fail(
            root, "schemaVersion", f"required key is missing; add `schemaVersion: {SCHEMA_VERSION}`"
        )
    version = reader.string(top["schemaVersion"], "schemaVersion")
    if version != SCHEMA_VERSION:
        raise reader.fail(
            top["schemaVersion"], "schemaVersion", f"unsupported {version!r}; only {SCHEMA_VERSION} is read"
        )
    if "licenseTests" in top and reader.sequence(top["licenseTests"], "licenseTests"):
        raise reader.fail(
            top["licenseTests"],
            "licenseTests",
            "not supported (CST's Google license allow-list); remove them",
        )
    return Suite(
        path=path,
        global_env_vars=reader.env_vars(top["globalEnvVars"], "globalEnvVars", allow_regex=False)
        if "globalEnvVars" in top
        else (),
        command_tests=tuple(
            _command(reader, item, f"commandTests[{i}]")
            for i, item in enumerate(reader.sequence(top.get("commandTests", _NULL), "commandTests"))
        ),
        file_existence_tests=tuple(
            _existence(reader, item, f"fileExistenceTests[{i}]")
            for i, item in enumerate(
                reader.sequence(top.get("fileExistenceTests", _NULL), "fileExistenceTests")
            )
        ),
        file_content_tests=tuple(
            _content(reader, item, f"fileContentTests[{i}]")
            for i, item in enumerate(reader.sequence(top.get("fileContentTests", _NULL), "fileContentTests"))
        ),
        metadata_test=_metadata(reader, top["metadataTest"])
        if "metadataTest" in top and not _is_null(top["metadataTest"])
        else None,
        container_run_options=_run_options(reader, top["containerRunOptions"])
        if "containerRunOptions" in top and not _is_null(top["containerRunOptions"])
        else ContainerRunOptions(),
        service_tests=tuple(
            _service(reader, item, f"serviceTests[{i}]")
            for i, item in enumerate(reader.sequence(top.get("serviceTests", _NULL), "serviceTests"))
        ),
        platform_check=reader.boolean(top["platformCheck"], "platformCheck")
        if "platformCheck" in top
        else True,
    )


_NULL = yaml.ScalarNode("tag:yaml.org,2002:null", "")


def _commands(reader: _Reader, node: yaml.Node, key_path: str) -> tuple[tuple[str, ...], ...]:
    result = []
    for i, item in enumerate(reader.sequence(node, key_path)):
        command = reader.strings(item, f"{key_path}[{i}]")
        if not command:
            raise reader.fail(item, f"{key_path}[{i}]", "empty command; remove it or give the program to run")
        result.append(command)
    return tuple(result)


def _command(reader: _Reader, node: yaml.Node, where: str) -> CommandTest:
    fields = reader.mapping(node, where, _COMMAND, ("name", "command"))
    get = fields.get
    return CommandTest(
        name=reader.string(fields["name"], f"{where}.name", non_empty=True),
        command=reader.string(fields["command"], f"{where}.command", non_empty=True),
        line=node.start_mark.line + 1,
        args=reader.strings(get("args", _NULL), f"{where}.args"),
        setup=_commands(reader, get("setup", _NULL), f"{where}.setup"),
        teardown=_commands(reader, get("teardown", _NULL), f"{where}.teardown"),
        env_vars=reader.env_vars(get("envVars", _NULL), f"{where}.envVars", allow_regex=False),
        expected_output=reader.regexes(get("expectedOutput", _NULL), f"{where}.expectedOutput"),
        excluded_output=reader.regexes(get("excludedOutput", _NULL), f"{where}.excludedOutput"),
        expected_error=reader.regexes(get("expectedError", _NULL), f"{where}.expectedError"),
        excluded_error=reader.regexes(get("excludedError", _NULL), f"{where}.excludedError"),
        exit_code=reader.integer(fields["exitCode"], f"{where}.exitCode") if "exitCode" in fields else 0,
    )


def _existence(reader: _Reader, node: yaml.Node, where: str) -> FileExistenceTest:
    fields = reader.mapping(node, where, _EXISTENCE, ("name", "path"))
    permissions = reader.opt_string(fields, "permissions", where)
    if permissions and not _PERMISSIONS.match(permissions):
        raise reader.fail(
            fields["permissions"],
            f"{where}.permissions",
            f"{permissions!r} is not a permission string like '-rwxr-xr-x' or 'drwxr-xr-x'",
        )
    executable_by = (
        reader.string(fields["isExecutableBy"], f"{where}.isExecutableBy")
        if "isExecutableBy" in fields
        else ""
    )
    if executable_by and executable_by not in EXECUTABLE_BY:
        raise reader.fail(
            fields["isExecutableBy"],
            f"{where}.isExecutableBy",
            f"{executable_by!r}: use one of {', '.join(EXECUTABLE_BY)}",
        )
    return FileExistenceTest(
        name=reader.string(fields["name"], f"{where}.name", non_empty=True),
        path=reader.string(fields["path"], f"{where}.path", non_empty=True),
        line=node.start_mark.line + 1,
        should_exist=reader.boolean(fields["shouldExist"], f"{where}.shouldExist")
        if "shouldExist" in fields
        else True,
        permissions=permissions,
        uid=reader.opt_int(fields, "uid", where),
        gid=reader.opt_int(fields, "gid", where),
        is_executable_by=executable_by,
    )


def _content(reader: _Reader, node: yaml.Node, where: str) -> FileContentTest:
    fields = reader.mapping(node, where, _CONTENT, ("name", "path"))
    return FileContentTest(
        name=reader.string(fields["name"], f"{where}.name", non_empty=True),
        path=reader.string(fields["path"], f"{where}.path", non_empty=True),
        line=node.start_mark.line + 1,
        expected_contents=reader.regexes(fields.get("expectedContents", _NULL), f"{where}.expectedContents"),
        excluded_contents=reader.regexes(fields.get("excludedContents", _NULL), f"{where}.excludedContents"),
    )


def _metadata(reader: _Reader, node: yaml.Node) -> MetadataTest:
    where = "metadataTest"
    fields = reader.mapping(node, where, _METADATA)
    get = fields.get

    def optional_list(key: str) -> tuple[str, ...] | None:
        if key not in fields:
            return None
        return reader.strings(fields[key], f"{where}.{key}")

    return MetadataTest(
        line=node.start_mark.line + 1,
        env_vars=reader.env_vars(get("envVars", _NULL), f"{where}.envVars", allow_regex=True),
        unbound_env_vars=tuple(
            var.key
            for var in reader.env_vars(
                get("unboundEnvVars", _NULL), f"{where}.unboundEnvVars", allow_regex=False, need_value=False
            )
        ),
        labels=reader.env_vars(get("labels", _NULL), f"{where}.labels", allow_regex=True),
        entrypoint=optional_list("entrypoint"),
        cmd=optional_list("cmd"),
        exposed_ports=reader.strings(get("exposedPorts", _NULL), f"{where}.exposedPorts"),
        unexposed_ports=reader.strings(get("unexposedPorts", _NULL), f"{where}.unexposedPorts"),
        volumes=reader.strings(get("volumes", _NULL), f"{where}.volumes"),
        unmounted_volumes=reader.strings(get("unmountedVolumes", _NULL), f"{where}.unmountedVolumes"),
        workdir=reader.opt_string(fields, "workdir", where),
        user=reader.opt_string(fields, "user", where),
    )


def _run_options(reader: _Reader, node: yaml.Node) -> ContainerRunOptions:
    where = "containerRunOptions"
    fields = reader.mapping(node, where, _RUN_OPTIONS)
    get = fields.get
    return ContainerRunOptions(
        user=reader.opt_string(fields, "user", where),
        privileged=reader.boolean(fields["privileged"], f"{where}.privileged")
        if "privileged" in fields
        else False,
        allocate_tty=reader.boolean(fields["allocateTty"], f"{where}.allocateTty")
        if "allocateTty" in fields
        else False,
        env_vars=reader.strings(get("envVars", _NULL), f"{where}.envVars"),
        env_file=reader.opt_string(fields, "envFile", where),
        capabilities=reader.strings(get("capabilities", _NULL), f"{where}.capabilities"),
        bind_mounts=reader.strings(get("bindMounts", _NULL), f"{where}.bindMounts"),
    )


def _service(reader: _Reader, node: yaml.Node, where: str) -> ServiceTest:
    fields = reader.mapping(node, where, _SERVICE, ("name",))
    port: int | None = None
    if "port" in fields:
        port = reader.integer(fields["port"], f"{where}.port")
        if not 1 <= port <= 65535:
            raise reader.fail(fields["port"], f"{where}.port", f"{port} is not a TCP port (1-65535)")
    wait = reader.string(fields["wait"], f"{where}.wait") if "wait" in fields else "auto"
    if wait not in ("healthy", "port", "auto"):
        raise reader.fail(fields["wait"], f"{where}.wait", f"{wait!r}: use healthy, port or auto")
    if wait == "port" and port is None:
        raise reader.fail(fields["wait"], f"{where}.wait", "waiting for a port needs `port:`")
    startup = (
        reader.number(fields["startupTimeout"], f"{where}.startupTimeout")
        if "startupTimeout" in fields
        else 60.0
    )
    if startup <= 0:
        raise reader.fail(fields["startupTimeout"], f"{where}.startupTimeout", "must be more than 0 seconds")
    requests = []
    for i, item in enumerate(reader.sequence(fields.get("requests", _NULL), f"{where}.requests")):
        requests.append(_request(reader, item, f"{where}.requests[{i}]"))
    if requests and port is None:
        raise reader.fail(
            fields["requests"], f"{where}.requests", "HTTP requests need `port:` (the container port)"
        )
    return ServiceTest(
        name=reader.string(fields["name"], f"{where}.name", non_empty=True),
        line=node.start_mark.line + 1,
        port=port,
        wait=wait,  # type: ignore[arg-type]  # checked against the Literal's values just above
        startup_timeout=startup,
        args=reader.strings(fields["args"], f"{where}.args") if "args" in fields else None,
        env_vars=reader.env_vars(fields.get("envVars", _NULL), f"{where}.envVars", allow_regex=False),
        requests=tuple(requests),
    )


def _request(reader: _Reader, node: yaml.Node, where: str) -> HttpRequest:
    fields = reader.mapping(node, where, _REQUEST)
    path = reader.string(fields["path"], f"{where}.path") if "path" in fields else "/"
    if not path.startswith("/"):
        raise reader.fail(fields["path"], f"{where}.path", f"{path!r} must start with '/'")
    method = reader.string(fields["method"], f"{where}.method").upper() if "method" in fields else "GET"
    if method not in _HTTP_METHODS:
        raise reader.fail(
            fields["method"], f"{where}.method", f"{method!r}: use one of {', '.join(_HTTP_METHODS)}"
        )
    status = reader.integer(fields["status"], f"{where}.status") if "status" in fields else 200
    if not 100 <= status <= 599:
        raise reader.fail(fields["status"], f"{where}.status", f"{status} is not an HTTP status")
    headers: list[tuple[str, str]] = []
    if "headers" in fields:
        header_node = fields["headers"]
        if not isinstance(header_node, yaml.MappingNode):
            raise reader.fail(
                header_node, f"{where}.headers", f"wrong type: expected a mapping, got {_kind(header_node)}"
            )
        for key_node, value_node in header_node.value:
            name = reader.string(key_node, f"{where}.headers", non_empty=True)
            headers.append((name, reader.string(value_node, f"{where}.headers.{name}")))
    return HttpRequest(
        path=path,
        method=method,
        status=status,
        expected_body=reader.regexes(fields.get("expectedBody", _NULL), f"{where}.expectedBody"),
        excluded_body=reader.regexes(fields.get("excludedBody", _NULL), f"{where}.excludedBody"),
        headers=tuple(headers),
    )


def to_cst_document(suite_text: str) -> dict[str, Any]:
    """The file's content without our extension keys, for feeding the same checks to CST itself."""
    document: dict[str, Any] = yaml.safe_load(suite_text) or {}
    document.pop("serviceTests", None)
    document.pop("platformCheck", None)
    return document
