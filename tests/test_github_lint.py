"""The GitHub workflow checks: the repository's own files pass, and each kind of problem is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.github_annotate import config_error_annotation, fan_out_matrix, locate_key, toml_dump
from pipeline.github_lint import lint, pin_findings, scripts, suppression_findings

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"


def needs_tools() -> None:
    for tool in ("zizmor", "check-jsonschema", "shellcheck"):
        beside = Path(sys.executable).parent / tool
        if not beside.is_file() and shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; `nox -s lint` and these tests need it", pytrace=False)


def write_workflow(root: Path, text: str, name: str = "w.yml") -> Path:
    path = root / ".github" / "workflows" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = f"""name: good
on: push
permissions: {{}}
jobs:
  build:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: {CHECKOUT} # v4.2.2
        with:
          persist-credentials: false
      - name: greet
        env:
          REF: ${{{{ github.ref_name }}}}
        run: |
          echo "hello ${{REF}}"
"""


def test_the_repositorys_workflows_and_action_pass() -> None:
    needs_tools()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.github_lint", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 finding(s)" in result.stdout


def test_a_clean_workflow_has_no_findings(tmp_path: Path) -> None:
    needs_tools()
    write_workflow(tmp_path, GOOD)
    findings, checked = lint(tmp_path)
    assert checked == 1
    assert findings == []


def test_each_checker_reports_on_the_line(tmp_path: Path) -> None:
    needs_tools()
    bad = GOOD.replace(f"{CHECKOUT} # v4.2.2", "actions/checkout@v4").replace(
        'echo "hello ${REF}"',
        'echo "${{ github.event.head_commit.message }}"\n          x=$1\n          echo $x',
    )
    path = write_workflow(tmp_path, bad)
    lines = path.read_text().splitlines()
    findings, _ = lint(tmp_path)
    by_tool = {(f.tool, f.line) for f in findings}
    uses_line = next(n for n, line in enumerate(lines, 1) if "actions/checkout@v4" in line)
    echo_line = next(n for n, line in enumerate(lines, 1) if "echo $x" in line)
    injection_line = next(n for n, line in enumerate(lines, 1) if "head_commit" in line)
    assert ("pins", uses_line) in by_tool
    assert ("zizmor", uses_line) in by_tool  # unpinned-uses
    assert ("zizmor", injection_line) in by_tool  # template-injection
    assert ("shellcheck", echo_line) in by_tool  # SC2086
    assert all(f.path == ".github/workflows/w.yml" for f in findings)


def test_schema_violations_are_findings(tmp_path: Path) -> None:
    needs_tools()
    write_workflow(tmp_path, GOOD.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"))
    findings, _ = lint(tmp_path)
    assert any(f.tool == "check-jsonschema" for f in findings), findings


def test_expressions_in_scripts_become_a_placeholder_for_shellcheck(tmp_path: Path) -> None:
    needs_tools()
    # The expression is quoted in bash; with `${{ }}` left in, shellcheck would report a bad substitution.
    text = GOOD.replace('echo "hello ${REF}"', 'test -n "${{ env.REF }}" && echo ok')
    write_workflow(tmp_path, text)
    findings, _ = lint(tmp_path)
    assert [f for f in findings if f.tool == "shellcheck"] == []


def test_scripts_are_found_with_their_lines_and_shells(tmp_path: Path) -> None:
    path = write_workflow(
        tmp_path,
        "on: push\ndefaults:\n  run:\n    shell: sh\njobs:\n  a:\n    runs-on: x\n    steps:\n"
        "      - run: echo one\n      - shell: python\n        run: |\n          print(1)\n",
    )
    found = scripts(path)
    assert [(s.line, s.shell, s.text.strip()) for s in found] == [
        (9, "sh", "echo one"),
        (12, "python", "print(1)"),
    ]
    action = scripts(REPO_ROOT / "action.yml")
    assert action and all(s.shell == "bash" for s in action)


def test_pins_need_a_full_sha_and_a_version_comment(tmp_path: Path) -> None:
    path = tmp_path / "w.yml"
    path.write_text(
        f"      - uses: {CHECKOUT}\n"
        f"      - uses: {CHECKOUT} # v4.2.2\n"
        "      - uses: actions/checkout@11bd719\n"
        "      - uses: ./local\n"
        "      - uses: docker://alpine:3.20\n"
    )
    assert [(f.line, f.message.split(": ", 1)[1]) for f in pin_findings(path, tmp_path)] == [
        (1, "add the version the SHA is, as `# vX.Y.Z`"),
        (3, "pin to a full 40-character commit SHA"),
    ]


def test_suppressions_need_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "w.yml"
    path.write_text(
        "uses: ./ # zizmor: ignore[self-repository]\n"
        "uses: ./ # zizmor: ignore[self-repository] -- the schema does not know $/ yet\n"
        "  # shellcheck disable=SC2086\n"
        "  # shellcheck disable=SC2086 # word splitting of the flag list is wanted here\n"
    )
    assert [(f.line, f.tool) for f in suppression_findings(path, tmp_path)] == [
        (1, "zizmor"),
        (3, "shellcheck"),
    ]


# --- the action's helpers -----------------------------------------------------------------------------


def test_locate_key_follows_tables_and_arrays() -> None:
    text = '[labels]\nsource = "x"\n\n[[images]]\nname = "a"\n\n[[images]]\nname = "b"\ncontxt = "."\n[images.tags]\nprefix = "p"\n'
    assert locate_key(text, "labels.source") == 2
    assert locate_key(text, "images[1].contxt") == 9
    assert locate_key(text, "images[1].tags.prefix") == 11
    assert locate_key(text, "images[0].platforms") == 4  # not written: the table that lacks it


def test_config_error_annotation_points_at_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[[images]]\nname = "x"\nplatforms = "linux/amd64"\n')
    message = f"{config}: images[0].platforms: wrong type"
    command = config_error_annotation(message, {"GITHUB_WORKSPACE": str(tmp_path)})
    assert command == f"::error file=pipeline.toml,line=3::{message}"


def test_toml_dump_round_trips_the_config_shapes() -> None:
    import tomllib

    document = tomllib.loads((REPO_ROOT / "pipeline.toml").read_text())
    document["registries"] = [{"name": "hub", "url": "docker.io/acme", "insecure": False}]
    document["images"][0]["build_args"] = {"BASE": "alpine:3.20", "WITH SPACE": 'quote " and \\ slash'}
    document["images"][0]["tags"] = {"prefix": "", "kinds": ["semver", "latest"]}
    document["smoke"] = {"timeout": 30.5}
    assert tomllib.loads(toml_dump(document)) == document


def test_fan_out_matrix_uses_native_runners() -> None:
    from pipeline.config import load_config

    config = load_config(REPO_ROOT / "pipeline.toml")
    include = fan_out_matrix(config, [])["include"]
    assert {(e["platform"], e["runner"]) for e in include} == {
        ("linux/amd64", "ubuntu-24.04"),
        ("linux/arm64", "ubuntu-24.04-arm"),
    }
    assert len({e["slug"] for e in include}) == len(include)
    assert all(e["slug"].startswith(e["image_slug"] + "--") for e in include)
