"""PL40x the build context: what a COPY of everything would send that the image should not get.

BuildKit only sends the files a build names, so these rules look at the context only when a COPY/ADD takes
all of it (`COPY . .`); a small context holding nothing but what the image needs wants no .dockerignore.
"""

from __future__ import annotations

from pipeline.lint.context import BUILD_OUTPUT_DIRS, BuildContext
from pipeline.lint.copies import copies_everything
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel

NO_DOCKERIGNORE = Rule(
    "PL401", "warning", "no .dockerignore", "add a .dockerignore beside the build context's root"
)
SENDS_GIT = Rule("PL402", "warning", "the context sends .git", "add .git to .dockerignore")
LARGE_FILES = Rule(
    "PL403", "warning", "large files in the context", "add them to .dockerignore or move them out"
)
BUILD_OUTPUTS = Rule(
    "PL404",
    "warning",
    "build outputs in the context",
    "add them (node_modules, .venv, target...) to .dockerignore",
)
RULES = (NO_DOCKERIGNORE, SENDS_GIT, LARGE_FILES, BUILD_OUTPUTS)


def check(model: BuildModel) -> list[Finding]:
    context = model.context
    if context is None:
        return []
    copy = next((i for s in model.built for i in s.instructions if copies_everything(i)), None)
    if copy is None:
        return []
    return _findings(model, context, copy.start_line)


def _findings(model: BuildModel, context: BuildContext, line: int) -> list[Finding]:
    path = model.path
    findings: list[Finding] = []
    if context.ignore_file is None and not context.is_small_and_dedicated():
        clutter = context.clutter()
        sent = f" (it would send {', '.join(clutter)})" if clutter else f" ({len(context.files)} files)"
        findings.append(
            NO_DOCKERIGNORE.at(
                path,
                line,
                f"the build context {context.root} has no .dockerignore, so COPY of everything sends all of it"
                f"{sent} and any change there busts the cache; add one listing .git, build outputs and local "
                "env files",
            )
        )
    if context.sent(".git"):
        findings.append(
            SENDS_GIT.at(
                path,
                line,
                f"{context.root / '.git'} is in the build context: every commit changes it and busts COPY . ; "
                "add .git to .dockerignore",
            )
        )
    outputs = [d for d in BUILD_OUTPUT_DIRS if (context.root / d).is_dir() and context.sent(d)]
    if outputs:
        findings.append(
            BUILD_OUTPUTS.at(
                path,
                line,
                f"the context sends local build outputs ({', '.join(sorted(outputs))}); add them to .dockerignore "
                "so the image builds its own",
            )
        )
    large = context.large_files()
    if large:
        shown = ", ".join(f"{name} ({size / 1048576:.0f} MiB)" for name, size in large[:3])
        more = f" and {len(large) - 3} more" if len(large) > 3 else ""
        findings.append(
            LARGE_FILES.at(
                path,
                line,
                f"the context sends large files: {shown}{more}; add them to .dockerignore or move them out of "
                "the context",
            )
        )
    return findings
