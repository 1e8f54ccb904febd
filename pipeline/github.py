"""GitHub Actions: step outputs, the job summary, log masking and annotations. No-ops elsewhere."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.report import ReleaseReport, signing_line, smoke_rows

# The config the action derives from its inputs, next to the project's own: the pipeline's file, not the
# project's, so it never makes a build context dirty.
DERIVED_CONFIG_NAME = ".pipeline-action.toml"


def on_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def mask_commands(config: PipelineConfig, environ: Mapping[str, str]) -> list[str]:
    """`::add-mask::` for every secret the config names: registry passwords, the cosign key and its password.
    GitHub masks one line per command, so a PEM is masked line by line. User names are not secrets: a masked
    user name (often the namespace too) would make GitHub drop every output that names an image."""
    values = [environ.get(r.password_env or "", "") for r in config.registries]
    if config.sign.method == "key":
        values += environ.get(config.sign.key_env or "", "").splitlines()
        values.append(environ.get(config.sign.password_env or "", ""))
    return [f"::add-mask::{value}" for value in dict.fromkeys(values) if value]


def mask_secrets(config: PipelineConfig, environ: Mapping[str, str]) -> None:
    """Print `mask_commands` on GitHub Actions, before anything could print a secret."""
    if on_actions(environ):
        for command in mask_commands(config, environ):
            print(command)


def annotation(level: str, message: str, *, file: str | None = None, line: int | None = None) -> str:
    """A workflow command that GitHub shows on the file and line (`level`: error, warning, notice)."""
    where = ",".join(
        part for part in (f"file={file}" if file else "", f"line={line}" if line else "") if part
    )
    escaped = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{level} {where}::{escaped}" if where else f"::{level}::{escaped}"


def _append_output(path: Path, name: str, value: str) -> None:
    # The heredoc form survives newlines in the value; a random delimiter cannot collide with it.
    delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
    with path.open("a") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def summary_markdown(report: ReleaseReport) -> str:
    lines = [
        f"### Release {report.version} — {report.status}",
        "",
        "| image | platform | registry | digest | runs as | smoke |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for outcome in report.images:
        rows = smoke_rows(outcome) or [("-", "-", outcome.index_digest or "-", "-", "not run")]
        for registry, platform, digest, reported, result in rows:
            lines.append(f"| {outcome.name} | {platform} | {registry} | `{digest}` | {reported} | {result} |")
    indexes = [
        f"`{outcome.name}@{outcome.index_digest}`" for outcome in report.images if outcome.index_digest
    ]
    if indexes:
        lines += ["", "**Index digests:** " + ", ".join(indexes)]
    moved = report.tags
    lines += ["", "**Tags moved:** " + (", ".join(f"`{ref}`" for ref in moved) if moved else "none")]
    signed = [
        f"- `{outcome.name}` in {registry}: {signing_line(record)}"
        for outcome in report.images
        for registry, record in outcome.signing.items()
    ]
    if signed:
        lines += ["", "**Signed:**", *signed]
    if report.failure:
        lines += ["", f"**Not promoted:** {report.failure}"]
    return "\n".join(lines) + "\n"


def write_github_outputs(report: ReleaseReport, environ: Mapping[str, str]) -> None:
    output = environ.get("GITHUB_OUTPUT")
    if output:
        path = Path(output)
        _append_output(path, "version", report.version)
        _append_output(path, "tags", "\n".join(report.tags))
        first_digest = next((image.index_digest for image in report.images if image.index_digest), "")
        _append_output(path, "digest", first_digest or "")
        _append_output(path, "json", json.dumps(report.to_json(), separators=(",", ":")))
        _append_output(path, "signatures", "\n".join(_signing_refs(report, "signature")))
        _append_output(path, "attestations", "\n".join(_signing_refs(report, "attestation")))
    summary = environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a") as handle:
            handle.write(summary_markdown(report))


def _signing_refs(report: ReleaseReport, kind: str) -> list[str]:
    """The signature (or attestation) references of the run, one per image and registry."""
    return [
        str(record[kind])
        for outcome in report.images
        for record in outcome.signing.values()
        if record.get(kind)
    ]
