"""What a run did: `release.json` for machines, a table for people.

The report is written even when the run fails, so that it says what was pushed where (by digest) and which
tags moved, if any: a rerun of the same commit completes the work.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.plan import Plan


@dataclass
class ImageOutcome:
    name: str
    index_digest: str | None = None
    platform_digests: dict[str, str] = field(default_factory=dict)
    pushed: dict[str, str] = field(default_factory=dict)  # registry -> repo@digest
    planned_tags: dict[str, list[str]] = field(default_factory=dict)  # registry -> full references
    tags_moved: dict[str, list[str]] = field(default_factory=dict)  # registry -> full references
    smoke: dict[str, Any] | None = None
    smoke_passed: bool | None = None
    reused_from: str | None = None  # the tag that already held this commit's tested digest (a rerun)
    signing: dict[str, dict[str, Any]] = field(default_factory=dict)  # registry -> pipeline.sign record

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index_digest": self.index_digest,
            "reused_from": self.reused_from,
            "platforms": self.platform_digests,
            "registries": [
                {
                    "name": registry,
                    "reference": self.pushed.get(registry),
                    "tags_planned": planned,
                    "tags_moved": self.tags_moved.get(registry, []),
                }
                for registry, planned in self.planned_tags.items()
            ],
            "smoke": self.smoke,
            "smoke_passed": self.smoke_passed,
            "signing": self.signing,
        }


@dataclass
class ReleaseReport:
    version: str
    revision: str
    mode: str
    started_at: str
    status: str = "running"
    failure: str | None = None
    images: list[ImageOutcome] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    step: str = "start"
    promotion: dict[str, list[str]] = field(
        default_factory=dict
    )  # kept / restored / unrestored, as sentences

    @classmethod
    def start(cls, plan: Plan, *, mode: str) -> ReleaseReport:
        return cls(
            version=plan.version,
            revision=plan.revision,
            mode=mode,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def add_image(self, name: str) -> ImageOutcome:
        outcome = ImageOutcome(name)
        self.images.append(outcome)
        return outcome

    def image(self, name: str) -> ImageOutcome:
        return next(outcome for outcome in self.images if outcome.name == name)

    def add_timing(self, step: str, seconds: float) -> None:
        self.timings[step] = self.timings.get(step, 0.0) + seconds

    def finish(self, status: str, error: BaseException | None = None) -> None:
        self.status = status
        if error is not None:
            lines = str(error).strip().splitlines()
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            self.failure = (
                lines[0] + more if lines else "".join(traceback.format_exception_only(error)).strip()
            )
            if isinstance(error, KeyboardInterrupt):
                self.failure = f"{self.failure or 'interrupted'} during {self.step}"

    @property
    def tags(self) -> list[str]:
        """The references tagged, or for a dry run those that would be."""
        source = "planned_tags" if self.mode == "dry-run" else "tags_moved"
        return [ref for image in self.images for refs in getattr(image, source).values() for ref in refs]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "revision": self.revision,
            "mode": self.mode,
            "status": self.status,
            "step": self.step,
            "failure": self.failure,
            "started_at": self.started_at,
            "images": [image.to_json() for image in self.images],
            "tags_moved": self.tags,
            "promotion": self.promotion,
            "timings": {key: round(value, 3) for key, value in self.timings.items()},
        }

    def write(self, path: Path) -> None:
        """Replace the report at once (write a sibling, then rename): a reader never sees half a report."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            partial.write_text(json.dumps(self.to_json(), indent=2) + "\n")
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)


def smoke_rows(outcome: ImageOutcome) -> list[tuple[str, str, str, str, str]]:
    """(registry, platform, digest, architecture the container reported, result) for every smoke target."""
    rows: list[tuple[str, str, str, str, str]] = []
    for target in (outcome.smoke or {}).get("targets", []):
        platform = str(target.get("platform", ""))
        digest = outcome.platform_digests.get(platform, outcome.index_digest or "")
        reported = next(
            (
                str(c.get("stdout", "")).strip()
                for c in target.get("checks", [])
                if c.get("kind") == "platform"
            ),
            "-",
        )
        result = "passed" if target.get("passed") else "FAILED"
        rows.append((str(target.get("registry", "")), platform, digest, reported or "-", result))
    return rows


def wide_console(*, stderr: bool = False) -> Console:
    """A console that does not fold tables and log lines at 80 columns when writing to a CI log or a pipe."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


def short_digest(digest: str) -> str:
    """Enough of a digest to tell images apart in a table; the JSON report has it whole."""
    return digest[: len("sha256:") + 12] if digest.startswith("sha256:") else digest


def print_release_table(report: ReleaseReport, console: Console | None = None) -> None:
    console = console or wide_console()
    table = Table(title=Text(f"release {report.version} ({report.status})"))
    for column in ("image", "platform", "registry", "digest", "runs as", "smoke"):
        table.add_column(column, overflow="fold")
    for outcome in report.images:
        rows = smoke_rows(outcome)
        if not rows:
            table.add_row(
                Text(outcome.name), "-", "-", short_digest(outcome.index_digest or "-"), "-", "not run"
            )
        for registry, platform, digest, reported, result in rows:
            table.add_row(
                *(
                    Text(cell)
                    for cell in (outcome.name, platform, registry, short_digest(digest), reported, result)
                )
            )
    console.print(table)
    for outcome in report.images:
        if outcome.index_digest:
            reused = f" (reused: already tested as {outcome.reused_from})" if outcome.reused_from else ""
            console.print(Text(f"{outcome.name} index digest: {outcome.index_digest}{reused}"))
    for outcome in report.images:
        for registry, moved in outcome.tags_moved.items():
            if moved:
                tags = ", ".join(ref.rsplit(":", 1)[-1] for ref in moved)
                console.print(Text(f"tagged {outcome.name} in {registry}: {tags}"))
    for line in report.promotion.get("kept", []):
        console.print(Text(f"kept: {line}"))
    for line in report.promotion.get("restored", []):
        console.print(Text(f"rolled back: {line}"))
    for line in report.promotion.get("unrestored", []):
        console.print(Text.assemble(("NOT rolled back: ", "bold red"), line))
    for outcome in report.images:
        for registry, record in outcome.signing.items():
            console.print(Text(f"signing {outcome.name} in {registry}: {signing_line(record)}"))
    if report.failure:
        # Text, never markup: an error message holding "[/x]" must print as it is, not raise MarkupError.
        console.print(Text.assemble(("not promoted: ", "bold red"), report.failure))


def signing_line(record: dict[str, Any]) -> str:
    """One registry's signing outcome in words: the signature and attestation references, or the error."""
    if record.get("error"):
        return f"FAILED: {record['error']}"
    parts = [f"signature {record.get('signature')}"]
    if record.get("attestation"):
        parts.append(f"attestation {record['attestation']}")
    return ", ".join(parts) + f" ({record.get('scheme')} scheme)"
