"""The rule families, one module each, and the catalogue of every rule code.

Each family module declares its `Rule`s (code, default severity, title, fix) in `RULES` and judges a
`BuildModel` in `check(model)`; this package runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from pipeline.lint.findings import META_RULES, PARSE, Finding, Rule
from pipeline.lint.model import BuildModel
from pipeline.lint.rules import cache, context, emulation, images, packages, secrets, sources, users

FAMILIES: tuple[ModuleType, ...] = (cache, packages, images, users, sources, secrets, context, emulation)
RULES: dict[str, Rule] = {
    rule.code: rule for rule in (*META_RULES, *(r for family in FAMILIES for r in family.RULES))
}
_CHECKS: tuple[Callable[[BuildModel], list[Finding]], ...] = tuple(family.check for family in FAMILIES)


def check_model(model: BuildModel) -> list[Finding]:
    """Every finding for one Dockerfile built for one target; pure apart from reading its context."""
    path = model.path
    findings = [PARSE.at(path, line, message) for line, message in model.dockerfile.problems]
    if not model.stages:
        findings.append(PARSE.at(path, 1, "no FROM instruction; a Dockerfile must start a stage with FROM"))
        return findings
    for run in _CHECKS:
        findings += run(model)
    return findings
