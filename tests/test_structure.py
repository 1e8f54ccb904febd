"""The CST YAML reader: strict validation with FILE:LINE and key path, and Go's regex/expansion semantics."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.structure import Suite, compile_go_regex, expand, go_search, parse_suite, to_cst_document

FILE = Path("/project/smoke.yaml")

FULL = """\
schemaVersion: 2.0.0
globalEnvVars:
  - key: A
    value: "1"
commandTests:
  - name: one
    command: echo
    args: [hi, 8080]
    setup: [["touch", "/x"]]
    teardown: [["rm", "/x"]]
    envVars: [{key: K, value: V}]
    expectedOutput: ["hi"]
    excludedOutput: ["bye"]
    expectedError: []
    excludedError: ["oops"]
    exitCode: 0
fileExistenceTests:
  - name: two
    path: /bin
    shouldExist: true
    permissions: drwxr-xr-x
    uid: 0
    gid: 0
    isExecutableBy: any
  - name: three
    path: /etc/passwd
fileContentTests:
  - name: four
    path: /etc/passwd
    expectedContents: ["root"]
    excludedContents: ["nobody"]
metadataTest:
  envVars: [{key: PATH, value: "/bin", isRegex: true}]
  unboundEnvVars: [{key: SECRET}]
  labels: [{key: a, value: b}]
  entrypoint: []
  cmd: ["sh"]
  exposedPorts: [8080]
  unexposedPorts: ["22"]
  volumes: ["/data"]
  unmountedVolumes: ["/tmp"]
  workdir: /app
  user: app
containerRunOptions:
  user: root
  privileged: false
serviceTests:
  - name: five
    port: 8080
    wait: healthy
    startupTimeout: 30
    requests:
      - path: /health
        method: get
        status: 204
        expectedBody: ["ok"]
        headers: {Accept: text/plain}
platformCheck: false
"""


def parse(text: str) -> Suite:
    return parse_suite(textwrap.dedent(text), FILE)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_full_file_is_read() -> None:
    suite = parse(FULL)
    command = suite.command_tests[0]
    assert command.args == ("hi", "8080")  # like Go's decoder, any scalar is text for a string field
    assert command.setup == (("touch", "/x"),) and command.teardown == (("rm", "/x"),)
    assert command.env_vars[0].key == "K" and command.line == 6
    two, three = suite.file_existence_tests
    assert two.uid == 0 and two.is_executable_by == "any" and two.permissions == "drwxr-xr-x"
    assert three.should_exist and three.uid is None  # CST's defaults: must exist, any owner
    assert suite.metadata_test is not None
    assert suite.metadata_test.entrypoint == () and suite.metadata_test.cmd == ("sh",)
    assert suite.metadata_test.unbound_env_vars == ("SECRET",)
    assert suite.metadata_test.env_vars[0].is_regex
    assert suite.container_run_options.user == "root"
    service = suite.service_tests[0]
    assert (
        service.wait == "healthy"
        and service.requests[0].method == "GET"
        and service.requests[0].status == 204
    )
    assert dict(service.requests[0].headers) == {"Accept": "text/plain"}
    assert suite.platform_check is False
    assert suite.check_count == 6


def test_metadata_without_entrypoint_key_checks_nothing() -> None:
    suite = parse("schemaVersion: 2.0.0\nmetadataTest:\n  workdir: /app\n")
    assert suite.metadata_test is not None and suite.metadata_test.entrypoint is None
    assert suite.platform_check is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    comand: echo\n",
            "smoke.yaml:4: commandTests[0].comand: unknown key (did you mean 'command'?)",
        ),
        (
            "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    command: echo\n    exitCode: zero\n",
            "smoke.yaml:5: commandTests[0].exitCode: wrong type: expected an integer, got str 'zero'",
        ),
        (
            "schemaVersion: 2.0.0\nfileExistenceTests:\n  - name: x\n    path: /a\n    shouldExist: maybe\n",
            "smoke.yaml:5: fileExistenceTests[0].shouldExist: wrong type: expected true or false",
        ),
        (
            "schemaVersion: 2.0.0\nfileExistenceTests:\n  - name: x\n",
            "smoke.yaml:3: fileExistenceTests[0].path: required key is missing",
        ),
        (
            "schemaVersion: 2.0.0\nfileExistenceTests:\n  - name: x\n    path: /a\n    permissions: '0755'\n",
            "smoke.yaml:5: fileExistenceTests[0].permissions: '0755' is not a permission string",
        ),
        (
            "schemaVersion: 2.0.0\nfileExistenceTests:\n  - {name: x, path: /a, isExecutableBy: everyone}\n",
            "smoke.yaml:3: fileExistenceTests[0].isExecutableBy: 'everyone': use one of owner, group, other, any",
        ),
        (
            "schemaVersion: 2.0.0\nfileContentTests:\n  - name: x\n    path: /a\n    expectedContents: ['(']\n",
            "smoke.yaml:5: fileContentTests[0].expectedContents[0]: invalid regular expression '('",
        ),
        (
            "schemaVersion: 2.0.0\nmetadataTest:\n  env:\n    - {key: A, value: b}\n",
            "smoke.yaml:3: metadataTest.env: unknown key",
        ),
        (
            "schemaVersion: 2.0.0\nmetadataTest:\n  cmd: sh\n",
            "smoke.yaml:3: metadataTest.cmd: wrong type: expected a list, got str 'sh'",
        ),
        ("commandTests: []\n", "smoke.yaml:1: schemaVersion: required key is missing"),
        ("schemaVersion: 1.0.0\n", "smoke.yaml:1: schemaVersion: unsupported '1.0.0'"),
        (
            "schemaVersion: 2.0.0\nlicenseTests:\n  - debian: true\n",
            "smoke.yaml:3: licenseTests: not supported",
        ),
        (
            "schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    command: a\n    setup: [[]]\n",
            "setup[0]: empty command",
        ),
        (
            "schemaVersion: 2.0.0\ncommandTests: {name: x}\n",
            "smoke.yaml:2: commandTests: wrong type: expected a list",
        ),
        ("schemaVersion: [\n", "smoke.yaml:2: not valid YAML"),
        ("", "smoke.yaml:1: empty file"),
        (
            "schemaVersion: 2.0.0\nserviceTests:\n  - name: s\n    requests: [{path: /}]\n",
            "smoke.yaml:4: serviceTests[0].requests: HTTP requests need `port:`",
        ),
        (
            "schemaVersion: 2.0.0\nserviceTests:\n  - {name: s, port: 80, wait: soon}\n",
            "serviceTests[0].wait: 'soon': use healthy, port or auto",
        ),
        (
            "schemaVersion: 2.0.0\nserviceTests:\n  - {name: s, port: 80, requests: [{path: x}]}\n",
            "serviceTests[0].requests[0].path: 'x' must start with '/'",
        ),
        ("schemaVersion: 2.0.0\nplatformCheck: no-thanks\n", "smoke.yaml:2: platformCheck: wrong type"),
    ],
)
def test_bad_input_names_file_line_and_key(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_unknown_key_lists_the_known_ones() -> None:
    message = error_of("schemaVersion: 2.0.0\nfileTests: []\n")
    assert message.startswith(f"{FILE}:2: fileTests: unknown key")
    assert "fileExistenceTests" in message


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^plain$", "plain\n", False),  # Go's $ without (?m) is the end of the text only
        ("^plain$", "plain", True),
        ("plain\n$", "plain\n", True),
        ("(?m)^b$", "a\nb\n", True),
        ("a(?m)$", "a\nb", True),  # flags in the middle of a pattern, which Python refuses as such
        ("(?i)HELLO", "hello", True),
        ("[[:digit:]]+x", "12x", True),
        ("[^[:space:]]+", "  ", False),
        ("\\Qa.b\\E", "axb", False),
        ("\\Qa.b\\E", "a.b", True),
        ("^a\\z", "a", True),
        ("\\d", "\u0663", False),  # RE2's \d is ASCII only
        ("[]a]", "]", True),
        ("x$|y", "y\n", True),
        (".*", "", True),
    ],
)
def test_go_regex_semantics(pattern: str, text: str, matches: bool) -> None:
    assert go_search(pattern, text) is matches


@pytest.mark.parametrize(
    "pattern",
    # Lookarounds, atomic groups and backreferences: Perl features RE2 (and so container-structure-test)
    # refuses and Python would accept (issue 17, point 14).
    [
        "\\Z",
        "[[:nope:]]",
        "(?U)a",
        "(?<=a)b",
        "(?<!a)b",
        "a(?=b)",
        "a(?!b)",
        "(?>ab)",
        "(a)\\1",
        "(?P<x>a)(?P=x)",
    ],
)
def test_go_regex_rejects_what_re2_rejects_or_we_cannot_mean_the_same(pattern: str) -> None:
    with pytest.raises(Exception):  # noqa: B017  # re.error
        compile_go_regex(pattern)


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$GREETING", "hello"),
        ("${GREETING}!", "hello!"),
        ("${UNDEFINED}x", "x"),
        ("$$", ""),
        ("$1", ""),
        ("cost$", "cost$"),
        ("a $ b", "a $ b"),
        ("${}", ""),
        ("${", ""),
        ("$GREETING_2", ""),
        ("pre-$GREETING.txt", "pre-hello.txt"),
    ],
)
def test_expand_follows_go_os_expand(text: str, expanded: str) -> None:
    env = {"GREETING": "hello"}
    assert expand(text, lambda key: env.get(key, "")) == expanded


def test_cst_document_strips_our_extension() -> None:
    document = to_cst_document(FULL)
    assert "serviceTests" not in document and "platformCheck" not in document
    assert document["commandTests"][0]["name"] == "one"
