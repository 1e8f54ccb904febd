"""The native fan-out commands (`pipeline build --platform`, `pipeline merge`) against a real engine and a
real registry: a platform built on its own is the very image a single-job release builds."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pipeline.distribution import RegistryClient
from tests.fixtures.registries import TestRegistry
from tests.test_release import IMAGE, git, make_project, run_pipeline

PLATFORMS = ("linux/amd64", "linux/arm64")


def _labels(client: RegistryClient, repository: str, digest: str) -> dict[str, str]:
    manifest = client.get_manifest(repository, digest)
    config = client.get_blob_json(repository, manifest.document["config"]["digest"])
    return dict(config["config"].get("Labels") or {})


@pytest.mark.engine
def test_fan_out_gives_the_single_job_images(
    tmp_path: Path, base_image: str, open_registry: TestRegistry
) -> None:
    """The same commit through `release`, then through `build` per platform + `merge` + `release --digest`
    (provenance off): the same per-platform digests, so the same labels, layers and config."""
    project = make_project(
        tmp_path,
        base_image,
        f'[build]\nprovenance = false\n\n[[registries]]\nname = "private"\nurl = "{open_registry.url}/parity"\n',
    )
    single = run_pipeline(project, "release")
    assert single.returncode == 0, (single.stdout + single.stderr)[-3000:]
    single_report = json.loads((project / "release.json").read_text())["images"][0]

    digest_files = []
    for platform in PLATFORMS:
        digest_file = tmp_path / f"{platform.replace('/', '-')}.json"
        built = run_pipeline(
            project, "build", "--platform", platform, "--push-by-digest", "--digest-file", str(digest_file)
        )
        assert built.returncode == 0, built.stderr[-3000:]
        assert json.loads(digest_file.read_text())["platforms"] == {
            platform: single_report["platforms"][platform]
        }
        digest_files.append(str(digest_file))
    merged = run_pipeline(project, "merge", *digest_files)
    assert merged.returncode == 0, merged.stderr[-3000:]
    index_digest = json.loads(merged.stdout.strip().splitlines()[-1])["index_digest"]
    released = run_pipeline(project, "release", "--digest", f"{IMAGE}={index_digest}")
    assert released.returncode == 0, (released.stdout + released.stderr)[-3000:]
    fan_report = json.loads((project / "release.json").read_text())["images"][0]

    assert set(single_report["platforms"]) == set(PLATFORMS)
    assert fan_report["index_digest"] == index_digest
    assert fan_report["platforms"] == single_report["platforms"]
    client = RegistryClient(open_registry.url)
    revision = git(project, "rev-parse", "HEAD")
    for digest in fan_report["platforms"].values():
        labels = _labels(client, f"parity/{IMAGE}", digest)
        assert labels["org.opencontainers.image.version"] == "1.2.3"
        assert labels["org.opencontainers.image.revision"] == revision
        assert labels["org.opencontainers.image.created"].startswith("2026-01-02T03:04:05")
    # The merged index describes the image as the single job's index does.
    single_index = client.get_manifest(f"parity/{IMAGE}", single_report["index_digest"]).document
    fan_index = client.get_manifest(f"parity/{IMAGE}", index_digest).document
    assert fan_index["annotations"]["org.opencontainers.image.version"] == "1.2.3"
    for key, value in fan_index["annotations"].items():
        assert single_index["annotations"][key] == value


def _imports(path: Path) -> set[str]:
    """The pipeline modules a module imports, lazily inside functions too (a cycle there is still a cycle),
    but not under `if TYPE_CHECKING:` (never executed)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for node in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pipeline")}
    return found


def test_build_publish_engine_and_release_import_each_other_in_no_cycle() -> None:
    """The commands (this module) sit on top; the classifier lives in retry, Credentials in registry."""
    package = Path(__file__).resolve().parents[1] / "pipeline"
    modules = {
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }
    graph = {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen: set[str] = set()
        todo = [start]
        while todo:
            current = todo.pop()
            for following in graph[current] - seen:
                if following == goal:
                    return True
                seen.add(following)
                todo.append(following)
        return False

    for name in (
        "pipeline.build",
        "pipeline.publish",
        "pipeline.engine",
        "pipeline.release",
        "pipeline.fanout",
        "pipeline.smoke",
        "pipeline.sign.signing",
        "pipeline.sign.verify",
    ):
        assert not reaches(name, name), f"{name} imports itself back through another module"
