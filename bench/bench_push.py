"""Pushing a big layer: an OCI layout holding one 1 GiB layer, pushed by the pipeline's registry client and by
Debian's skopeo (`skopeo copy oci:LAYOUT docker://REGISTRY/...`, installed by `nox -s bench`), to the same
kind of registry (the distribution registry on loopback), each run to a fresh repository so that every byte
really travels. One warm-up each, then the sides alternate; median of three.

1. time: the pipeline's push (a child process: startup included, as for skopeo) over skopeo's. Target 1.1.
2. memory: the pipeline child's peak RSS over 150 MiB (ratio <= 1: under the budget). The layer is streamed
   from disk, never held whole.
3. two registries: the pipeline pushing to two registries at once over pushing to one. Target 1.3.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.registry import RegistryServer, free_port

LAYER_BYTES = 1 << 30
ROUNDS = 3
TIME_TARGET = 1.1
RSS_BUDGET_MIB = 150.0
TWO_TARGET = 1.3
SKOPEO = "skopeo"


def write_big_layout(directory: Path, size: int = LAYER_BYTES) -> str:
    """A single-platform image whose one layer is `size` incompressible bytes; returns the manifest digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = blobs / "partial"
    block = secrets.token_bytes(1 << 20)
    with partial.open("wb") as stream:
        for index in range(size // len(block)):
            # Every MiB differs (so nothing dedups), without paying for 1 GiB of fresh randomness.
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            stream.write(chunk)
    layer = "sha256:" + digest.hexdigest()
    partial.rename(blobs / layer.removeprefix("sha256:"))

    def put(document: dict[str, object]) -> tuple[str, int]:
        data = json.dumps(document).encode()
        name = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / name.removeprefix("sha256:")).write_bytes(data)
        return name, len(data)

    config, config_size = put(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}}
    )
    manifest, manifest_size = put(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": config_size,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}
            ],
        }
    )
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest,
        "size": manifest_size,
    }
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return manifest


@dataclass(frozen=True)
class Run:
    seconds: float  # wall
    rss_mib: float  # peak
    cpu: float  # user + system seconds of the child itself
    output: str = ""


def timed_child(command: list[str]) -> Run:
    """Wall seconds, peak RSS and CPU time of one child process."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        output, error = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {error[-800:]}")
    return Run(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, output)


def push_child() -> None:
    """`python -m bench.bench_push LAYOUT DIGEST REPOSITORY HOST [HOST ...]`: what the pipeline does for a
    release's push, to every host at once."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.distribution import BlobUploader, RegistryClient

    layout, digest, repository, *hosts = sys.argv[1:]

    def push(host: str) -> int:
        return BlobUploader(RegistryClient(host), repository).push_layout(Path(layout), digest).bytes_sent

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        print(json.dumps(list(pool.map(push, hosts))))


def run() -> list[tuple[str, float, float, str]]:
    if shutil.which(SKOPEO) is None:
        raise SystemExit("skopeo is missing: `nox -s bench` installs it from Debian (apt-get install skopeo)")
    with tempfile.TemporaryDirectory(prefix="bench-push-") as scratch_name:
        scratch = Path(scratch_name)
        layout = scratch / "layout"
        digest = write_big_layout(layout)
        return _measure(scratch, layout, digest)


def _fresh_registries(scratch: Path, count: int) -> list[RegistryServer]:
    """Empty registries for one run: skopeo would otherwise mount the blob from a repository an earlier run
    filled (its blob-info cache remembers where it went), and send nothing."""
    return [RegistryServer(scratch / secrets.token_hex(4), free_port()).start() for _ in range(count)]


def _in_fresh_registries(scratch: Path, count: int, command: Callable[[list[str]], list[str]]) -> Run:
    registries = _fresh_registries(scratch, count)
    try:
        return timed_child(command([registry.url for registry in registries]))
    finally:
        for registry in registries:
            registry.stop()
            shutil.rmtree(registry.directory, ignore_errors=True)


def _measure(scratch: Path, layout: Path, digest: str) -> list[tuple[str, float, float, str]]:
    def skopeo() -> Run:
        return _in_fresh_registries(
            scratch,
            1,
            lambda hosts: [
                SKOPEO,
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{layout}",
                f"docker://{hosts[0]}/bench/big:latest",
            ],
        )

    def pipeline(count: int) -> Run:
        run = _in_fresh_registries(
            scratch,
            count,
            lambda hosts: [
                sys.executable,
                "-m",
                "bench.bench_push",
                str(layout),
                digest,
                "bench/big",
                *hosts,
            ],
        )
        sent = json.loads(run.output)
        if len(sent) != count or min(sent) < LAYER_BYTES:
            raise RuntimeError(f"the pipeline sent {sent} bytes, not the 1 GiB layer to each of {count}")
        return run

    skopeo(), pipeline(1)  # warm-up: page cache, imports
    samples: dict[str, list[Run]] = {"skopeo": [], "one": [], "two": []}
    for _ in range(ROUNDS):
        samples["skopeo"].append(skopeo())
        samples["one"].append(pipeline(1))
        samples["two"].append(pipeline(2))
    seconds = {name: statistics.median(run.seconds for run in runs) for name, runs in samples.items()}
    cpu = {name: statistics.median(run.cpu for run in runs) for name, runs in samples.items()}
    # Paired per round: the shared machine's load drifts between rounds, less within one.
    two_over_one = statistics.median(
        two.seconds / one.seconds for one, two in zip(samples["one"], samples["two"], strict=True)
    )
    peak = max(run.rss_mib for name in ("one", "two") for run in samples[name])
    skopeo_rss = max(run.rss_mib for run in samples["skopeo"])
    gib_per_s = (LAYER_BYTES / (1 << 30)) / seconds["one"]
    return [
        (
            "1 GiB layer push / skopeo copy",
            seconds["one"] / seconds["skopeo"],
            TIME_TARGET,
            f"pipeline {seconds['one']:.2f}s ({gib_per_s:.2f} GiB/s, {cpu['one']:.2f}s CPU), skopeo "
            f"{seconds['skopeo']:.2f}s ({cpu['skopeo']:.2f}s CPU); median of {ROUNDS}",
        ),
        (
            "peak RSS / 150 MiB",
            peak / RSS_BUDGET_MIB,
            1.0,
            f"pipeline peak {peak:.0f} MiB (one and two registries), skopeo {skopeo_rss:.0f} MiB",
        ),
        (
            "two registries / one",
            two_over_one,
            TWO_TARGET,
            f"two at once {seconds['two']:.2f}s ({cpu['two']:.2f}s CPU), one {seconds['one']:.2f}s; median of "
            f"{ROUNDS} paired rounds (the registries' own hashing and writing dominate)",
        ),
    ]


if __name__ == "__main__":
    push_child()
