"""What a COPY/ADD takes from the build context: a manifest, a helper a manifest needs, or the sources.

A copy of the sources (everything, a source folder, a glob of source files) invalidates the cache of every
later step on any code change; a manifest (or a helper beside it, such as a Go `replace` folder or a Yarn
`.yarn/` folder) changes only when dependencies do. Folders are told from files by the context when there is
one, by the name otherwise.
"""

from __future__ import annotations

import re
from typing import Literal

from pipeline.dockerfile import Instruction
from pipeline.lint.model import BuildModel

MANIFEST_FILES = re.compile(
    r"^(requirements[\w.-]*\.(txt|in)|constraints\.txt|pyproject\.toml|poetry\.lock|uv\.lock|Pipfile(\.lock)?|"
    r"setup\.(py|cfg)|package(-lock)?\.json|npm-shrinkwrap\.json|yarn\.lock|pnpm-(lock|workspace)\.yaml|"
    r"\.npmrc|\.yarnrc(\.yml)?|\.pnpmfile\.cjs|go\.(mod|sum|work)|Gemfile(\.lock)?|[\w.-]+\.gemspec|"
    r"Cargo\.(toml|lock)|recipe\.json|pom\.xml|build\.gradle(\.kts)?|settings\.gradle(\.kts)?|"
    r"gradle\.properties|composer\.(json|lock)|[\w.-]+\.(csproj|fsproj|sln)|nuget\.config|mix\.(exs|lock)|"
    r"\.python-version|\.nvmrc|\.tool-versions|gradlew|mvnw)$",
    re.IGNORECASE,
)
# Folders a dependency install reads besides the manifest, and build artifacts (not sources) to install.
HELPER_DIRS = frozenset(
    {
        ".yarn",
        "patches",
        ".cargo",
        ".mvn",
        "gradle",
        "prisma",
        "vendor",
        ".husky",
        "requirements",
        "wheels",
        "dist",
    }
)
_SOURCE_GLOB = re.compile(
    r"^\*\.(py|go|js|mjs|cjs|ts|tsx|jsx|rs|java|kt|rb|php|c|cc|cpp|h|html|css|vue|svelte)$"
)
_HAS_EXTENSION = re.compile(r"[^/]\.[A-Za-z0-9]{1,8}$")
# Files that are named without an extension by convention.
_BARE_FILES = frozenset(
    {
        "Makefile",
        "Dockerfile",
        "Procfile",
        "LICENSE",
        "VERSION",
        "Justfile",
        "Rakefile",
        "Caddyfile",
        "Jenkinsfile",
    }
)


def context_sources(instruction: Instruction) -> list[str]:
    """Context paths a COPY/ADD reads; empty for `--from`, heredocs, URLs and malformed lines."""
    if (
        instruction.keyword not in ("COPY", "ADD")
        or instruction.flag("from") is not None
        or instruction.heredocs
    ):
        return []
    words = instruction.words()
    return (
        [w for w in words[:-1] if not re.match(r"^(https?|git|ssh)://|^git@", w)] if len(words) >= 2 else []
    )


def copies_everything(instruction: Instruction) -> bool:
    """`COPY . .`, `ADD . /app`, `COPY ./ ./`, `COPY * /x/`: the whole context."""
    return any(s.removeprefix("./").rstrip("/") in ("", ".", "*") for s in context_sources(instruction))


def is_manifest(source: str) -> bool:
    """A manifest, or a glob for one (`poetry.lock*`, `package*.json`, `requirements*.txt`)."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    return bool(MANIFEST_FILES.match(name) or MANIFEST_FILES.match(name.replace("*", "").replace("?", "")))


def _is_folder(model: BuildModel, source: str) -> bool:
    if model.context is not None:
        path = model.context.root / source.removeprefix("./").rstrip("/")
        if path.exists():
            return path.is_dir()
    name = source.rstrip("/").rsplit("/", 1)[-1]
    if "*" in name or "?" in name:
        return False  # a glob names files (a glob for sources is caught before this)
    return source.endswith("/") or not (_HAS_EXTENSION.search(name) or name in _BARE_FILES)


def _holds_manifest(model: BuildModel, folder: str) -> bool:
    if model.context is None:
        return False
    path = model.context.root / folder.removeprefix("./").rstrip("/")
    try:
        return path.is_dir() and any(is_manifest(child.name) for child in path.iterdir())
    except OSError:
        return False


CopyKind = Literal["sources", "maybe-helper"]


def manifest_ecosystems(instruction: Instruction) -> set[str]:
    """Which ecosystems' manifests a COPY brings in (`go`, `cargo`, `js`, or `other`)."""
    found: set[str] = set()
    for source in context_sources(instruction):
        name = source.rstrip("/").rsplit("/", 1)[-1]
        if not is_manifest(name):
            continue
        found.add(
            "go"
            if name.startswith("go.")
            else "cargo"
            if name.startswith("Cargo.")
            else "js"
            if name.startswith("package")
            else "other"
        )
    return found


def classify_copy(model: BuildModel, instruction: Instruction, manifests: set[str]) -> CopyKind | None:
    """`sources` when this COPY/ADD brings in source code (so a later install re-runs on code changes);
    `maybe-helper` for a folder copied after a Go/Cargo manifest (a `replace` folder, a workspace member) or a
    JS workspace's `packages/`, which is a helper if the next RUN installs from the manifest; None otherwise.

    `manifests`: the ecosystems whose manifest was copied earlier in the stage with no install since.
    """
    sources = context_sources(instruction)
    names_manifest = bool(manifest_ecosystems(instruction))
    result: CopyKind | None = None
    for source in sources:
        cleaned = source.removeprefix("./").rstrip("/")
        if cleaned in ("", ".", "*") or _SOURCE_GLOB.match(cleaned.rsplit("/", 1)[-1]):
            return "sources"
        if is_manifest(cleaned) or not _is_folder(model, source):
            continue
        folder = cleaned.rsplit("/", 1)[-1]
        if folder in HELPER_DIRS or (names_manifest and folder.startswith(".")):
            continue
        if manifests and _holds_manifest(model, cleaned):
            continue
        # `src` is the package's own sources (Cargo's layout), never a workspace member or `replace` folder.
        if model.context is None and (
            (manifests & {"go", "cargo"} and folder != "src") or ("js" in manifests and folder == "packages")
        ):
            result = "maybe-helper"
            continue
        return "sources"
    return result


def describe(instruction: Instruction) -> str:
    written = f"{instruction.keyword} {instruction.original}"
    return f"{written if len(written) <= 60 else written[:57] + '...'} (line {instruction.start_line})"
