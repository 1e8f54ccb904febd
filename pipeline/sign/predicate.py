"""The smoke attestation's predicate (pure): what the gate tested, in the statement `cosign attest` signs.

Its type, `PREDICATE_TYPE`, is our own and documented in the README.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.report import ImageOutcome

PREDICATE_TYPE = "urn:image-pipeline:smoke-test:v1"


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def smoke_predicate(
    outcome: ImageOutcome, *, version: str, revision: str, smoke_file: Path | None
) -> dict[str, Any]:
    """What the gate tested, for the attestation: digests, every platform x registry verdict with check
    counts, the smoke file's digest, the git revision and version."""
    targets = []
    for target in (outcome.smoke or {}).get("targets", []):
        checks = target.get("checks", [])
        errored = 1 if target.get("error") else 0
        targets.append(
            {
                "registry": target.get("registry"),
                "platform": target.get("platform"),
                "reference": target.get("reference"),
                "passed": bool(target.get("passed")),
                "checks": len(checks) + errored,
                "failed": sum(1 for check in checks if not check.get("passed")) + errored,
            }
        )
    return {
        "image": outcome.name,
        "version": version,
        "revision": revision,
        "index_digest": outcome.index_digest,
        "platforms": dict(outcome.platform_digests),
        "smoke": {
            "file": smoke_file.name if smoke_file else None,
            "file_digest": file_digest(smoke_file) if smoke_file and smoke_file.is_file() else None,
            "passed": bool(outcome.smoke_passed),
            "targets": targets,
        },
        "tool": {"name": "image-pipeline", "version": __version__},
    }
