"""PL30x base images: pinned to a version, not a tag that moves, and resolvable without build args."""

from __future__ import annotations

import re

from pipeline.dockerfile import Stage
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel

NOT_PINNED = Rule(
    "PL301", "error", "base image not pinned", "pin a version tag (and optionally a @sha256 digest)"
)
MOVING_TAG = Rule(
    "PL302", "warning", "base image tag moves", "use a tag that names a version, e.g. 3.20 or 1.22-bookworm"
)
ARG_WITHOUT_DEFAULT = Rule(
    "PL303", "info", "base image from a build arg without default", "give the ARG a pinned default"
)
RULES = (NOT_PINNED, MOVING_TAG, ARG_WITHOUT_DEFAULT)

# Release codenames name a version as a number would: a Debian or Ubuntu release (`debian:wheezy` is Debian 7)
# or a Node.js LTS line (`node:carbon` is Node 8). `sid` is not one: it is unstable and moves.
CODENAMES = frozenset(
    {
        "bookworm",
        "bullseye",
        "buster",
        "stretch",
        "jessie",
        "wheezy",
        "squeeze",
        "trixie",
        "jammy",
        "focal",
        "noble",
        "bionic",
        "xenial",
        "trusty",
        "plucky",
        "oracular",
        "argon",
        "boron",
        "carbon",
        "dubnium",
        "erbium",
        "fermium",
        "gallium",
        "hydrogen",
        "iron",
        "jod",
        "krypton",
    }
)
_OWN_BASE = re.compile(r"(^|[-_/])base$")
_OWN_BASE_TAG = re.compile(r"^(base|builder|build-base)([-_.]|$)")
_LOCAL_REGISTRY = re.compile(r"^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?/")


def check(model: BuildModel) -> list[Finding]:
    findings: list[Finding] = []
    for stage in model.built:
        finding = _base_image(model, stage)
        if finding is not None:
            findings.append(finding)
    return findings


def split_reference(reference: str) -> tuple[str, str | None]:
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag
    return name, None


def _own_image(model: BuildModel, name: str) -> bool:
    """Built earlier by this project's own pipeline (so its tag is the pipeline's business)."""
    if _LOCAL_REGISTRY.match(name):
        return True
    return any(name == own or name.endswith("/" + own) for own in model.options.own_images)


def _base_image(model: BuildModel, stage: Stage) -> Finding | None:
    line = stage.from_instruction.start_line
    if model.parent(stage) is not None:
        return None
    resolved = model.resolve_base(stage)
    if "$" in resolved:
        return ARG_WITHOUT_DEFAULT.at(
            model.path,
            line,
            f"base {stage.base} comes from a build arg with no default, so its pinning cannot be checked; "
            "declare ARG with a pinned default before the first FROM",
        )
    if resolved.lower() == "scratch" or "@sha256:" in resolved:
        return None
    name, tag = split_reference(resolved)
    if _own_image(model, name) or ("$" in stage.base and _OWN_BASE.search(name)):
        # `FROM ${BASE_IMAGE}` defaulting to the project's own base image: its pipeline passes the tag.
        return None
    if tag is None or tag == "latest":
        shown = f"{stage.base} (= {resolved})" if resolved != stage.base else resolved
        return NOT_PINNED.at(
            model.path,
            line,
            f"base {shown} is {'latest' if tag else 'not tagged'}, so a rebuild can silently change it; "
            f"pin a version tag such as {name}:X.Y (add @sha256:... for reproducible builds)",
        )
    repository = name.rsplit("/", 1)[-1]
    if _OWN_BASE_TAG.match(tag):
        return None  # `app:base-debian`: a base the project builds for itself, tagged by its own pipeline
    if not re.search(r"\d", tag) and not re.search(r"\d", repository) and tag.split("-")[0] not in CODENAMES:
        return MOVING_TAG.at(
            model.path,
            line,
            f"base {resolved}: tag {tag!r} names no version and moves with upstream; use a versioned tag",
        )
    return None
