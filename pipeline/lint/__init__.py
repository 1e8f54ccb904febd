"""`pipeline lint`: Dockerfile rules about layer-cache order, package hygiene, base images, users, secrets,
the build context and emulated compiles, merged with hadolint's findings into one report.

The package's layout is its design:

- `pipeline.dockerfile` parses the file; `shell` reads RUN commands into words; `commands` says what they
  do (installs, compiles, caches); `context` reads the build context from disk; `copies` tells sources from
  manifests; `model` joins them into the image the rules judge (ARG expansion, stage graph, the role of
  each stage, the project's platforms).
- `rules/` holds one module per rule family: PL1xx `cache`, PL2xx `packages`, PL30x `images`, PL31x
  `users`, PL32x/PL332 `sources`, PL33x `secrets`, PL4xx `context`, PL5xx `emulation`; PL0xx (the lint
  itself) live in `findings` and `disables`.
- `hadolint` runs and merges hadolint; `disables` applies disable comments; `output` writes text, JSON or
  SARIF; `runner` lints a set of targets; `cli` is the subcommand.
"""

from __future__ import annotations

from pipeline.lint.cli import collect_targets, register
from pipeline.lint.context import is_ignored, parse_dockerignore
from pipeline.lint.disables import apply_disables
from pipeline.lint.findings import SEVERITY_RANK, Finding, Rule, Severity
from pipeline.lint.hadolint import HADOLINT_OVERLAP, merge_hadolint, run_hadolint
from pipeline.lint.model import LintOptions
from pipeline.lint.output import FORMATS, format_json, format_sarif, format_text, render
from pipeline.lint.rules import RULES
from pipeline.lint.runner import Report, Target, check_context, check_dockerfile, lint_targets, shown

__all__ = [
    "FORMATS",
    "HADOLINT_OVERLAP",
    "RULES",
    "SEVERITY_RANK",
    "Finding",
    "LintOptions",
    "Report",
    "Rule",
    "Severity",
    "Target",
    "apply_disables",
    "check_context",
    "check_dockerfile",
    "collect_targets",
    "format_json",
    "format_sarif",
    "format_text",
    "is_ignored",
    "lint_targets",
    "merge_hadolint",
    "parse_dockerignore",
    "register",
    "render",
    "run_hadolint",
    "shown",
]
