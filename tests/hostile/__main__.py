"""Run the hostile cases and count what must be zero: tracebacks and unexpected-error paths, state
corruptions (a human tag on an untested digest, registries that disagree, `latest` on a lower version, a
report that contradicts the registries), secrets on disk or in output, and processes or throwaway files a
signal left behind. Expectation misses (a right exit code but another message) are counted apart.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.hostile.cases import CONCURRENT, GHP, PASTED, Case, Ctx, all_cases
from tests.hostile.world import (
    GIT_ENV,
    IMAGE,
    Run,
    World,
    base_config,
    git,
    human_tags,
    make_project,
    newer,
    registries_toml,
    run_cli,
    still_alive,
    version_of,
    world,
)


@dataclass
class Tally:
    runs: int = 0
    tracebacks: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    corruptions: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    phase_missed: list[str] = field(default_factory=list)
    groups: Counter[str] = field(default_factory=Counter)


@dataclass
class NamespaceState:
    """What has passed smoke in one namespace, across the runs of a case."""

    tested: set[str] = field(default_factory=set)


def _error_lines(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("error:") or ": error: " in line]


def check_run(tally: Tally, case_id: str, expect_rc: tuple[int, ...], expect: str, run: Run) -> None:
    tally.runs += 1
    where = f"{case_id} ({' '.join(run.args)})"
    output = run.stdout + run.stderr
    if "Traceback (most recent call last)" in output:
        tally.tracebacks.append(where)
    errors = _error_lines(run)
    if (
        any("unexpected " in line or line.startswith("error: docker:") for line in errors)
        or "HOSTILE: the run hung" in output
    ):
        tally.unexpected.append(f"{where}: {errors[-1] if errors else 'hung'}")
    signal_missed = run.signalled and not run.phase_reached
    if signal_missed:
        tally.phase_missed.append(where)
    if run.returncode not in expect_rc and not (signal_missed and run.returncode == 0):
        tally.unexpected.append(
            f"{where}: exit {run.returncode} (want {expect_rc}): {(errors or [output[-300:]])[-1]}"
        )
    elif run.returncode != 0 and not errors and run.returncode not in (130, 143):
        tally.unexpected.append(f"{where}: failed without an error line")
    elif expect and expect not in output:
        tally.misses.append(f"{where}: no {expect!r} in {(errors or [output[-200:]])[-1]}")
    if run.signalled:
        alive = still_alive(run.children)
        if alive:
            tally.leftovers.append(f"{where}: children still running: {alive}")


def scan_secrets(tally: Tally, where: str, world: World, run: Run, project: Path) -> None:
    texts = {"stdout": run.stdout, "stderr": run.stderr}
    for path in [*project.rglob("*"), *run.tmpdir.rglob("*")]:
        # The config is where the user pasted the secret: finding it there is their input, not our leak.
        if (
            path.is_file()
            and ".git" not in path.parts
            and path.name != "pipeline.toml"
            and path.stat().st_size < 5_000_000
        ):
            with contextlib.suppress(OSError):
                texts[str(path)] = path.read_text(errors="replace")
    for name, text in texts.items():
        for secret in [*world.secrets, GHP, *PASTED]:
            if secret in text:
                tally.secrets.append(f"{where}: a secret in {name}")
    left = (
        [p.name for p in run.tmpdir.iterdir() if p.name.startswith("pipeline-")]
        if run.tmpdir.exists()
        else []
    )
    if left:
        tally.leftovers.append(f"{where}: left in TMPDIR: {left}")


def check_registries(
    tally: Tally,
    where: str,
    world: World,
    namespace: str,
    state: NamespaceState,
    project: Path,
    *others: Path,
) -> None:
    """The invariants that must hold in the registries after any run, whatever it did. `others`: the
    projects of concurrent runs, whose reports may rightly claim tags this run's report also claims."""
    report = _read_report(project)
    claims: dict[str, set[str]] = {}
    for source in (project, *others):
        other = _read_report(source) or {}
        for image in other.get("images", []):
            if image.get("smoke_passed") and image.get("index_digest"):
                state.tested.add(image["index_digest"])
                for reference in other.get("tags_moved", []):
                    claims.setdefault(reference, set()).add(image["index_digest"])
    repository = f"{namespace}/{IMAGE}"
    seen: dict[str, dict[str, str | None]] = {}
    for which in ("private", "hub"):
        client = world.client(which)
        tags = human_tags(client, repository)
        seen[which] = tags
        for tag, digest in tags.items():
            if digest not in state.tested:
                tally.corruptions.append(f"{where}: {which} {tag} -> untested {digest}")
        latest_digest = tags.get("latest")
        if latest_digest:
            latest = version_of(client, repository, latest_digest)
            for tag, digest in tags.items():
                if digest and digest != latest_digest and re.fullmatch(r"[0-9.]+", tag):
                    theirs = version_of(client, repository, digest)
                    if newer(theirs, latest):
                        tally.corruptions.append(
                            f"{where}: {which} latest on {latest} below {tag} ({theirs})"
                        )
    unrestored = (report or {}).get("promotion", {}).get("unrestored")
    if seen["private"] and seen["hub"] and not unrestored:
        for tag in set(seen["private"]) & set(seen["hub"]):
            if seen["private"][tag] != seen["hub"][tag]:
                tally.corruptions.append(f"{where}: registries disagree on {tag}")
        if set(seen["private"]) ^ set(seen["hub"]) and _both_configured(project):
            tally.corruptions.append(
                f"{where}: half promoted: {sorted(set(seen['private']) ^ set(seen['hub']))}"
            )
    if report is not None and report.get("status") not in (None, "running"):
        for reference in report.get("tags_moved", []):
            name, _, tag = reference.rpartition(":")
            which = "hub" if name.startswith(world.auth_registry.url) else "private"
            digests = {image.get("index_digest") for image in report.get("images", [])}
            digests |= claims.get(reference, set())
            if seen.get(which, {}).get(tag) not in digests:
                tally.corruptions.append(
                    f"{where}: the report says {reference} moved, the registry disagrees"
                )
    elif report is not None and report.get("status") == "running":
        tally.corruptions.append(f"{where}: the report still says running after the process ended")


def _both_configured(project: Path) -> bool:
    with contextlib.suppress(OSError):
        text = (project / "pipeline.toml").read_text()
        return 'name = "hub"' in text and 'name = "private"' in text
    return False


def _read_report(project: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        report: dict[str, Any] = json.loads((project / "release.json").read_text())
        return report
    return None


def run_case(tally: Tally, world: World, case: Case, root: Path) -> None:
    namespace = f"h-{case.id}-{secrets.token_hex(2)}"
    case_dir = root / case.id
    hosts = {}
    for name, plan in case.faults.items():
        upstream = world.auth_registry.url if name == "hub" else world.open_registry.url
        hosts[name] = world.proxy(upstream, plan).url
    config = (
        base_config(
            world,
            registries_toml(world, namespace, case.registries, hosts) if case.registries != "none" else "",
            case.extra,
        )
        + case.tail
    )
    if case.config is not None:
        config = case.config(config)
    project = make_project(world, case_dir / "project", config, tag=case.tag)
    ctx = Ctx(world, project, namespace, case_dir / "tmp", hosts)
    if case.prepare is not None:
        case.prepare(ctx)
    state = NamespaceState()
    env = {**world.environ, **case.env}
    for attempt in range(case.runs):
        run = _run(project, case.args, ctx.tmp / str(attempt), env, case)
        expect = case.expect if attempt == case.runs - 1 else ""
        check_run(tally, case.id, case.expect_rc, expect, run)
        scan_secrets(tally, case.id, world, run, project)
        check_registries(tally, case.id, world, namespace, state, project)
    tally.groups[case.group] += case.runs


def _run(project: Path, args: tuple[str, ...], tmp: Path, env: dict[str, str], case: Case) -> Run:
    if args[:1] == ("--config",):
        tmp.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=project,
            env={**os.environ, **GIT_ENV, "TMPDIR": str(tmp), **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        return Run(args, result.returncode, result.stdout, result.stderr, time.monotonic() - started, tmp)
    return run_cli(project, args, tmp, env, send=case.send)


# --- concurrency ------------------------------------------------------------------------------------------


def run_concurrent(tally: Tally, world: World, case_id: str, root: Path) -> None:
    namespace = f"h-{case_id}-{secrets.token_hex(2)}"
    case_dir = root / case_id
    config = base_config(world, registries_toml(world, namespace, "both"))
    origin = make_project(world, case_dir / "origin", config, tag="v1.2.9")
    state = NamespaceState()
    env = world.environ
    if case_id == "concurrent-same-commit":
        clones = [_clone(origin, case_dir / f"clone{i}") for i in range(2)]
        runs = _parallel([(c, case_dir / f"tmp{i}") for i, c in enumerate(clones)], env)
        for clone, run in zip(clones, runs, strict=True):
            check_run(tally, case_id, (0, 1), "", run)
            scan_secrets(tally, case_id, world, run, clone)
            check_registries(tally, case_id, world, namespace, state, clone, *clones)
        return
    older = _clone(origin, case_dir / "older")  # cloned before 1.3.0 existed
    git(origin, "commit", "-q", "--allow-empty", "-m", "newer")
    git(origin, "tag", "v1.3.0")
    newer_clone = _clone(origin, case_dir / "newer")
    if case_id == "concurrent-older-finishes-last":
        first = run_cli(newer_clone, ("release",), case_dir / "tmp-newer", env)
        check_run(tally, case_id, (0,), "", first)
        check_registries(tally, case_id, world, namespace, state, newer_clone)
        second = run_cli(older, ("release",), case_dir / "tmp-older", env)
        check_run(tally, case_id, (0,), "higher than 1.2.9", second)
        for project, run in ((newer_clone, first), (older, second)):
            scan_secrets(tally, case_id, world, run, project)
        check_registries(tally, case_id, world, namespace, state, older)
        return
    runs = _parallel([(newer_clone, case_dir / "tmp-newer"), (older, case_dir / "tmp-older")], env)
    for project, run in zip((newer_clone, older), runs, strict=True):
        check_run(tally, case_id, (0, 1), "", run)
        scan_secrets(tally, case_id, world, run, project)
        check_registries(tally, case_id, world, namespace, state, project, newer_clone, older)


def _clone(origin: Path, target: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(target))
    return target


def _parallel(jobs: list[tuple[Path, Path]], env: dict[str, str]) -> list[Run]:
    results: list[Run | None] = [None] * len(jobs)

    def work(index: int, project: Path, tmp: Path) -> None:
        results[index] = run_cli(project, ("release",), tmp, env)

    threads = [threading.Thread(target=work, args=(i, p, t)) for i, (p, t) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


# --- main ---------------------------------------------------------------------------------------------------


def list_markdown() -> str:
    lines = [
        "# Hostile cases (issue 17)",
        "",
        "Generated by `python -m tests.hostile --list`; run them with "
        "`python -m tests.hostile` (real registries on loopback, the real engine).",
        "",
        "| id | group | what | runs | expected exit |",
        "|---|---|---|---|---|",
    ]
    for case in all_cases():
        lines.append(
            f"| {case.id} | {case.group} | {case.what} | {case.runs} | {', '.join(map(str, case.expect_rc))} |"
        )
    for case_id, group, what in CONCURRENT:
        lines.append(f"| {case_id} | {group} | {what} | 2 | 0 (or 1 for the loser of a race) |")
    total = sum(c.runs for c in all_cases()) + 2 * len(CONCURRENT)
    lines += [
        "",
        f"{total} runs. After every run: tracebacks and unexpected-error paths, state corruptions "
        "(human tag on an untested digest, registries disagreeing or half promoted, `latest` below another "
        "release, a report contradicting the registries or left `running`), secrets (the registry password, "
        "its base64 auth, a pasted token) in stdout, stderr, the project and TMPDIR, and after signals any "
        "child process or `pipeline-*` temp folder left.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile")
    parser.add_argument("--only", default="*", help="fnmatch pattern of case ids")
    parser.add_argument("--list", action="store_true", help="print the case list as markdown")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    if args.list:
        print(list_markdown(), end="")
        return 0
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    tally = Tally()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with world(root / "world") as env:
            for case in all_cases():
                if fnmatch.fnmatch(case.id, args.only):
                    before = tally.runs
                    case_started = time.monotonic()
                    try:
                        run_case(tally, env, case, root / "cases")
                    except Exception as error:  # a harness failure is reported, not hidden
                        tally.unexpected.append(f"{case.id}: harness: {type(error).__name__}: {error}")
                    print(
                        f"{case.id}: {tally.runs - before} run(s), {time.monotonic() - case_started:.1f}s",
                        flush=True,
                    )
            for case_id, group, _ in CONCURRENT:
                if fnmatch.fnmatch(case_id, args.only):
                    try:
                        run_concurrent(tally, env, case_id, root / "cases")
                    except Exception as error:
                        tally.unexpected.append(f"{case_id}: harness: {type(error).__name__}: {error}")
                    tally.groups[group] += 2
                    print(f"{case_id}: done", flush=True)
            for proxy in env.proxies:
                proxy.stop()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{tally.runs} runs in {time.monotonic() - started:.0f}s by group: {dict(tally.groups)}")
    for name in ("tracebacks", "unexpected", "corruptions", "secrets", "leftovers", "misses", "phase_missed"):
        items = getattr(tally, name)
        print(f"{name}: {len(items)}")
        for item in items:
            print(f"  - {item}")
    bad = tally.tracebacks or tally.unexpected or tally.corruptions or tally.secrets or tally.leftovers
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
