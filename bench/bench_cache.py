"""Layer-cache reuse of the example images: a rebuild after a one-line source change over a cold build.

For each image of the project's config whose Dockerfile lives under Dockerfiles/, `pipeline.cachemeasure`
copies the context to a temporary folder, builds it with `--no-cache` (the cold build), appends one line to
an application source file in the copy, and rebuilds with the cache, both for the native platform and to
the build cache only. The ratio is rebuild wall time over cold wall time; target 0.25. The detail says how
many steps were reused and whether every step before the source copy was.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cachemeasure import measure
from pipeline.config import load_config

TARGET = 0.25
ROOT = Path(__file__).resolve().parents[1]


def run() -> list[tuple[str, float, float, str]]:
    config = load_config(ROOT / "pipeline.toml")
    examples = ROOT / "Dockerfiles"
    rows: list[tuple[str, float, float, str]] = []
    for image in config.pipeline.images:
        dockerfile = config.dockerfile_path(image)
        if not dockerfile.is_relative_to(examples):
            continue
        result = measure(
            config.context_dir(image),
            dockerfile,
            image=image.name,
            build_args=dict(image.build_args),
            target=image.target,
        )
        steps = len(result.reused) + len(result.rerun)
        verdict = "all reused" if result.reused_before_source_copy else "NOT all reused"
        detail = (
            f"cold {result.cold.seconds:.2f}s, rebuild {result.rebuild.seconds:.2f}s; "
            f"{len(result.reused)}/{steps} steps reused; steps before the source copy: {verdict}; "
            f"changed {result.changed_file}"
        )
        rows.append((f"{image.short_name} rebuild/cold", result.ratio, TARGET, detail))
    return rows
