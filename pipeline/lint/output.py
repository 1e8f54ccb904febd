"""Output formats: text for people, JSON for scripts, SARIF 2.1.0 for GitHub code scanning."""

from __future__ import annotations

import json
import re
from typing import Any

from pipeline import __version__
from pipeline.lint.findings import TOOL_NAME
from pipeline.lint.rules import RULES
from pipeline.lint.runner import Report

FORMATS = ("text", "json", "sarif")


def format_text(report: Report) -> str:
    lines = [f"{f.path}:{f.line}: {f.severity} {f.code}: {f.message}" for f in report.findings]
    lines.append(
        f"{len(report.files)} Dockerfile(s): {report.count('error')} error(s), {report.count('warning')} "
        f"warning(s), {report.count('info')} info"
    )
    return "\n".join(lines) + "\n"


def format_json(report: Report) -> str:
    document = {
        "tool": TOOL_NAME,
        "files": report.files,
        "summary": {s: report.count(s) for s in ("error", "warning", "info")},
        "findings": [
            {
                "code": f.code,
                "severity": f.severity,
                "path": f.path,
                "line": f.line,
                "end_line": f.end_line or f.line,
                "message": f.message,
                "source": f.source,
            }
            for f in report.findings
        ],
    }
    return json.dumps(document, indent=2) + "\n"


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def format_sarif(report: Report) -> str:
    """SARIF 2.1.0 as GitHub code scanning accepts it: rules in the driver, relative URIs, line regions."""
    codes = sorted({f.code for f in report.findings} | set(RULES))
    rules: list[dict[str, Any]] = []
    for code in codes:
        rule = RULES.get(code)
        if rule is not None:
            rules.append(
                {
                    "id": code,
                    "name": re.sub(r"[^A-Za-z0-9]+", "-", rule.title).strip("-"),
                    "shortDescription": {"text": rule.title},
                    "fullDescription": {"text": f"{rule.title}: {rule.fix}"},
                    "help": {"text": rule.fix},
                    "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
                    "properties": {"tags": ["dockerfile"]},
                }
            )
        else:
            rules.append(
                {
                    "id": code,
                    "name": code,
                    "shortDescription": {"text": f"hadolint {code}"},
                    "helpUri": f"https://github.com/hadolint/hadolint/wiki/{code}"
                    if code.startswith("DL")
                    else f"https://www.shellcheck.net/wiki/{code}",
                    "properties": {"tags": ["dockerfile", "hadolint"]},
                }
            )
    index = {rule["id"]: position for position, rule in enumerate(rules)}
    results = [
        {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path, "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": f.line, "endLine": max(f.end_line or f.line, f.line)},
                    }
                }
            ],
            "partialFingerprints": {"primaryLocationLineHash": f"{f.code}:{f.path}:{f.message[:60]}"},
        }
        for f in report.findings
    ]
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "informationUri": "https://github.com/hadolint/hadolint",
                        "semanticVersion": _version(),
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": "pipeline-lint/"},
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _version() -> str:
    return str(__version__)


def render(report: Report, output_format: str) -> str:
    if output_format == "json":
        return format_json(report)
    if output_format == "sarif":
        return format_sarif(report)
    return format_text(report)
