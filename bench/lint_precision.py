"""Precision and recall of `pipeline lint` on a corpus of real Dockerfiles judged by hand.

The corpus itself stays out of git (other people's files); this script makes the figure reproducible:

    python -m bench.lint_precision run CORPUS_DIR [--contexts DIR] --out findings.tsv
    python -m bench.lint_precision score findings.tsv judgements.tsv

`run` lints every Dockerfile under CORPUS_DIR (with `--hadolint`, hadolint runs and is timed too, as in
`pipeline lint`) for the default two platforms, each file without a build context; a folder under `--contexts` named like the
file's first path component holds a reconstructed context (file names of the real repository) for the PL4xx
and entrypoint checks. It writes one finding a line: file, line, code, severity, message; and prints the
median and worst time per file and any crash.

`score` reads judgements (tab-separated: file, line, code, verdict, note) where verdict is `right`, `wrong`
or `miss` (a fault the linter should have reported and did not: counted against recall only), and prints
the per-rule table: findings, right, wrong, unjudged, precision; overall and error-only precision; recall of
the cache-order rules PL101-PL103.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

CACHE_ORDER = ("PL101", "PL102", "PL103")


def _dockerfiles(corpus: Path) -> list[Path]:
    return sorted(
        p
        for p in corpus.rglob("*")
        if p.is_file() and (p.name.lower() == "dockerfile" or p.name.lower().endswith(".dockerfile"))
    )


def run(corpus: Path, contexts: Path | None, out: Path, hadolint: bool = False) -> int:
    from pipeline.config import LintConfig
    from pipeline.lint import Target, lint_targets

    rows: list[tuple[str, int, str, str, str]] = []
    times: list[float] = []
    crashes: list[str] = []
    for path in _dockerfiles(corpus):
        name = path.relative_to(corpus).as_posix()
        context_dir = contexts / name.split("/", 1)[0] if contexts is not None else None
        target = (
            Target(context_dir / "Dockerfile", context_dir)
            if context_dir is not None and context_dir.is_dir()
            else Target(path, None)
        )
        started = time.perf_counter()
        try:
            report = lint_targets([target], LintConfig(hadolint=hadolint), base=target.dockerfile.parent)
        except Exception:
            crashes.append(f"{name}: {traceback.format_exc(limit=3)}")
            continue
        times.append(time.perf_counter() - started)
        # Our own rules only: hadolint's findings are hadolint's precision, not ours.
        rows += [
            (name, f.line, f.code, f.severity, f.message) for f in report.findings if f.code.startswith("PL")
        ]
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerows(rows)
    print(f"{len(times) + len(crashes)} files, {len(rows)} findings, {len(crashes)} crash(es)")
    if times:
        print(f"time per file: median {statistics.median(times):.4f} s, max {max(times):.4f} s")
    for crash in crashes:
        print(crash, file=sys.stderr)
    return 1 if crashes else 0


def score(findings: Path, judgements: Path) -> int:
    found: dict[tuple[str, int, str], str] = {}
    with findings.open() as handle:
        for row in csv.reader(handle, delimiter="\t"):
            found[(row[0], int(row[1]), row[2])] = row[3]
    verdicts: dict[tuple[str, int, str], str] = {}
    misses: Counter[str] = Counter()
    with judgements.open() as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row or row[0].startswith("#"):
                continue
            key = (row[0], int(row[1]), row[2])
            if row[3] == "miss":
                misses[row[2]] += 1
            else:
                verdicts[key] = row[3]
    table: dict[str, Counter[str]] = {}
    for key, severity in found.items():
        counts = table.setdefault(key[2], Counter())
        counts["findings"] += 1
        counts[verdicts.get(key, "unjudged")] += 1
        counts[f"{severity}:{verdicts.get(key, 'unjudged')}"] += 1
    print(
        f"{'rule':7} {'findings':>8} {'right':>6} {'wrong':>6} {'unjudged':>8} {'precision':>9} {'missed':>6}"
    )
    for code in sorted(set(table) | set(misses)):
        counts = table.get(code, Counter())
        judged = counts["right"] + counts["wrong"]
        precision = f"{counts['right'] / judged:.0%}" if judged else "-"
        print(
            f"{code:7} {counts['findings']:8} {counts['right']:6} {counts['wrong']:6} {counts['unjudged']:8} "
            f"{precision:>9} {misses[code]:6}"
        )
    right = sum(c["right"] for c in table.values())
    wrong = sum(c["wrong"] for c in table.values())
    unjudged = sum(c["unjudged"] for c in table.values())
    error_right = sum(c["error:right"] for c in table.values())
    error_wrong = sum(c["error:wrong"] for c in table.values())
    print(f"overall precision: {right}/{right + wrong} = {right / max(right + wrong, 1):.1%}")
    print(
        f"error precision:   {error_right}/{error_right + error_wrong} = {error_right / max(error_right + error_wrong, 1):.1%}"
    )
    caught = sum(table.get(code, Counter())["right"] for code in CACHE_ORDER)
    missed = sum(misses[code] for code in CACHE_ORDER)
    print(f"cache-order recall: {caught}/{caught + missed} = {caught / max(caught + missed, 1):.1%}")
    if unjudged:
        print(f"{unjudged} finding(s) not judged yet", file=sys.stderr)
    return 1 if unjudged else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lint_precision", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("corpus", type=Path)
    run_parser.add_argument("--contexts", type=Path, default=None)
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument(
        "--hadolint", action="store_true", help="run hadolint too (as `pipeline lint` does)"
    )
    score_parser = commands.add_parser("score")
    score_parser.add_argument("findings", type=Path)
    score_parser.add_argument("judgements", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.corpus, args.contexts, args.out, args.hadolint)
    return score(args.findings, args.judgements)


if __name__ == "__main__":
    raise SystemExit(main())
