"""The release report: written atomically, and printed as plain text whatever the messages hold."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from pipeline.report import ReleaseReport, print_release_table


def _report() -> ReleaseReport:
    return ReleaseReport(
        version="1.2.3", revision="0" * 40, mode="publish", started_at="2026-01-01T00:00:00+00:00"
    )


def test_messages_with_brackets_print_as_they_are_never_as_markup() -> None:
    """Issue 17, point 11: a `[/x]` in an error raised MarkupError and hid the real error."""
    report = _report()
    outcome = report.add_image("acme/[/x]")
    outcome.tags_moved = {"hub": ["r/acme:[bold]1.2.3"]}
    report.promotion = {"unrestored": ["hub: r:[/] still on sha256:x"]}
    report.finish("failed", RuntimeError("registry said [/x] and [red]no[/red]"))
    buffer = io.StringIO()
    print_release_table(report, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "not promoted: registry said [/x] and [red]no[/red]" in text
    assert "NOT rolled back: hub: r:[/] still on sha256:x" in text
    assert "tagged acme/[/x] in hub: [bold]1.2.3" in text


def test_the_report_is_replaced_whole_and_leaves_no_partial_file(tmp_path: Path) -> None:
    report = _report()
    target = tmp_path / "out" / "release.json"
    report.write(target)
    report.step = "push acme/hello"
    report.write(target)
    assert json.loads(target.read_text())["step"] == "push acme/hello"
    assert [p.name for p in target.parent.iterdir()] == ["release.json"]


def test_a_multi_line_failure_is_its_first_line_and_a_count() -> None:
    report = _report()
    report.finish("refused", RuntimeError("first problem\nsecond problem\nthird problem"))
    assert report.failure == "first problem (and 2 more)"
