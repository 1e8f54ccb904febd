"""The build context as it really is: which files `docker build` would send, read from disk.

`.dockerignore` follows BuildKit's rules (`**`, `!` exceptions, the last match wins, `<Dockerfile>.dockerignore`
beside the Dockerfile wins over the context's). The walk is bounded so that a huge tree costs little, and
files are only read when a rule asks (an entrypoint script, an `.npmrc`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

LARGE_FILE_BYTES = 10 * 1024 * 1024
WALK_LIMIT = 50_000
READ_LIMIT = 256 * 1024
BUILD_OUTPUT_DIRS = (
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    "target",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
)
# What a repository root holds that an image never needs: a context without any of them, and small, is a
# dedicated context and needs no .dockerignore.
CLUTTER = (
    ".git",
    ".github",
    ".gitlab-ci.yml",
    ".env",
    "docker-compose.yml",
    "compose.yaml",
    ".idea",
    ".vscode",
)
SMALL_CONTEXT_FILES = 25


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    negated: bool


def parse_dockerignore(text: str) -> list[IgnorePattern]:
    """`.dockerignore` lines as BuildKit reads them: `**`, `!` exceptions, the last match wins."""
    patterns: list[IgnorePattern] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.removeprefix("!").strip()
        line = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
        if line in (".", ""):
            line = "**"
        patterns.append(IgnorePattern(re.compile(_glob_to_regex(line)), negated))
    return patterns


def _glob_to_regex(pattern: str) -> str:
    out = ["^"]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                index += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            close = pattern.find("]", index)
            if close == -1:
                out.append(re.escape(char))
            else:
                out.append("[" + pattern[index + 1 : close].replace("!", "^", 1) + "]")
                index = close
        else:
            out.append(re.escape(char))
        index += 1
    # A pattern that names a directory also excludes everything below it.
    out.append("(?:/.*)?$")
    return "".join(out)


def is_ignored(relative: str, patterns: Sequence[IgnorePattern]) -> bool:
    ignored = False
    for pattern in patterns:
        if pattern.regex.match(relative):
            ignored = not pattern.negated
    return ignored


def dockerignore_for(dockerfile: Path, context: Path) -> Path | None:
    """`<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if specific.is_file():
        return specific
    general = context / ".dockerignore"
    return general if general.is_file() else None


@dataclass
class BuildContext:
    """A build context folder and the `.dockerignore` that applies to it."""

    root: Path
    ignore_file: Path | None
    patterns: list[IgnorePattern] = field(default_factory=list)
    large_bytes: int = LARGE_FILE_BYTES

    @classmethod
    def load(cls, dockerfile: Path, root: Path, large_bytes: int = LARGE_FILE_BYTES) -> BuildContext:
        ignore_file = dockerignore_for(dockerfile, root)
        patterns = (
            parse_dockerignore(ignore_file.read_text(encoding="utf-8", errors="replace"))
            if ignore_file is not None
            else []
        )
        return cls(root, ignore_file, patterns, large_bytes)

    def sent(self, relative: str) -> bool:
        """Whether the path exists and a COPY of the whole context would send it."""
        return (self.root / relative).exists() and not is_ignored(relative, self.patterns)

    @cached_property
    def files(self) -> list[tuple[str, int]]:
        """(relative path, size) of every file that would be sent, bounded by WALK_LIMIT."""
        return list(self._walk())

    def _walk(self) -> Iterator[tuple[str, int]]:
        seen = 0
        for root, dirs, files in os.walk(self.root):
            relative_root = os.path.relpath(root, self.root).replace(os.sep, "/")
            prefix = "" if relative_root == "." else relative_root + "/"
            # Skipping ignored folders keeps the walk cheap on trees with node_modules or .git.
            dirs[:] = [d for d in dirs if not is_ignored(prefix + d, self.patterns) and d != ".git"]
            for name in files:
                seen += 1
                if seen > WALK_LIMIT:
                    return
                relative = prefix + name
                if is_ignored(relative, self.patterns):
                    continue
                try:
                    size = (Path(root) / name).stat().st_size
                except OSError:
                    continue
                yield relative, size

    def clutter(self) -> list[str]:
        """Repository clutter and build outputs that a COPY of everything would send."""
        names = [*CLUTTER, *BUILD_OUTPUT_DIRS]
        return [name for name in names if self.sent(name)]

    def is_small_and_dedicated(self) -> bool:
        """A handful of files and no repository clutter: everything in it is meant for the image."""
        return not self.clutter() and len(self.files) <= SMALL_CONTEXT_FILES

    def read(self, relative: str) -> str | None:
        """The text of a context file that would be sent, or None (missing, ignored, too big, a folder)."""
        relative = relative.removeprefix("./").lstrip("/")
        path = self.root / relative
        if not relative or is_ignored(relative, self.patterns) or not path.is_file():
            return None
        try:
            if path.stat().st_size > READ_LIMIT:
                return None
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def large_files(self) -> list[tuple[str, int]]:
        return sorted(((n, s) for n, s in self.files if s >= self.large_bytes), key=lambda item: -item[1])
