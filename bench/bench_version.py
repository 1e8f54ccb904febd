"""Version computation against `git describe --tags --long` on a generated 20,000-commit, 2,000-tag repository.

The repository is generated once with `git fast-import` (seconds, not 20,000 `git commit` calls) and cached
in the temp directory; a marker written last tells a complete cache from an interrupted one. Both sides
run in the same process and the same run, interleaved, and each is timed from scratch (a new gitpython
Repo for ours, a new process for git's), so that the ratio does not depend on the machine.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.gitcontext import read_state

COMMITS = 20_000
TAGS = 2_000
PAST_LAST_TAG = 7
REPETITIONS = 15
WARMUP = 2
TARGET = 2.0
CACHE_VERSION = 3
EPOCH = 1_600_000_000


def _tag_name(index: int) -> str:
    # 2,000 distinct versions 0.0.0 .. 19.9.9; every third tag is annotated, the others lightweight.
    return f"v{index // 100}.{index // 10 % 10}.{index % 10}"


def _fast_import_stream() -> bytes:
    parts: list[str] = []
    step = (COMMITS - PAST_LAST_TAG) // TAGS
    tagged = {COMMITS - PAST_LAST_TAG - step * (TAGS - 1 - i): i for i in range(TAGS)}
    for n in range(1, COMMITS + 1):
        when = EPOCH + 60 * n
        message = f"commit {n}"
        content = f"{n}\n"
        parts.append(
            f"commit refs/heads/main\nmark :{n}\ncommitter Bench <bench@example.com> {when} +0000\n"
            f"data {len(message)}\n{message}\n"
        )
        if n > 1:
            parts.append(f"from :{n - 1}\n")
        parts.append(f"M 644 inline file.txt\ndata {len(content)}\n{content}\n")
        # A noise tag now and then (not a release, to be ignored), away from HEAD so that describe agrees.
        if n % 997 == 0 and n < COMMITS - 1000:
            parts.append(f"reset refs/tags/build-{n}\nfrom :{n}\n\n")
        if n in tagged:
            index = tagged[n]
            name = _tag_name(index)
            if index % 3 == 0:
                parts.append(
                    f"tag {name}\nfrom :{n}\ntagger Bench <bench@example.com> {when} +0000\ndata 7\nrelease\n"
                )
            else:
                parts.append(f"reset refs/tags/{name}\nfrom :{n}\n\n")
    return "".join(parts).encode()


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True)


def bench_repository() -> Path:
    cache = Path(tempfile.gettempdir()) / "image-pipeline-bench"
    repo = cache / f"version-{COMMITS}-{TAGS}-v{CACHE_VERSION}"
    marker = repo / ".git" / "bench-complete"
    if marker.exists():
        return repo
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="version-building-", dir=cache))
    _git(building, "init", "-q", "-b", "main")
    _git(building, "fast-import", "--quiet", stdin=_fast_import_stream())
    # What a clone looks like: packed refs (with their peeled ids) and a checked-out tree.
    _git(building, "pack-refs", "--all")
    _git(building, "checkout", "-q", "-f", "main")
    (building / ".git" / "bench-complete").write_text("ok\n")
    shutil.rmtree(repo, ignore_errors=True)
    building.rename(repo)
    return repo


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _time(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run() -> list[tuple[str, float, float, str]]:
    started = time.perf_counter()
    repo = bench_repository()
    prepared = time.perf_counter() - started
    describe_command = ["git", "describe", "--tags", "--long"]

    def ours() -> object:
        return read_state(repo).version

    def theirs() -> object:
        return subprocess.run(describe_command, cwd=repo, check=True, capture_output=True, text=True).stdout

    state = read_state(repo)
    described = str(theirs()).strip()
    # Sanity: on this linear history both must agree on the base tag and the distance.
    base_tag, distance, _ = described.rsplit("-", 2)
    assert state.base is not None and (state.base.tag, state.distance) == (base_tag, int(distance)), described

    ours_samples: list[float] = []
    theirs_samples: list[float] = []
    for repetition in range(WARMUP + REPETITIONS):
        # Alternate who goes first, so that neither always gets the warmer page cache.
        if repetition % 2:
            ours_time = _time(ours)
            theirs_time = _time(theirs)
        else:
            theirs_time = _time(theirs)
            ours_time = _time(ours)
        if repetition >= WARMUP:
            ours_samples.append(ours_time)
            theirs_samples.append(theirs_time)
    ours_ms, theirs_ms = _median_ms(ours_samples), _median_ms(theirs_samples)
    detail = (
        f"{state.version} in {ours_ms:.1f} ms vs git describe {theirs_ms:.1f} ms "
        f"(median of {REPETITIONS}; {COMMITS} commits, {len(state.releases)} release tags; repo ready in "
        f"{prepared:.1f} s)"
    )
    return [("version vs git describe --tags --long", ours_ms / theirs_ms, TARGET, detail)]
