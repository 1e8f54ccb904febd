"""`python -m bench [NAME ...]`: run the named benchmarks (default: all) and print a ratio table."""

from __future__ import annotations

import importlib
import sys

from rich.table import Table

from pipeline.report import wide_console

# Each module exposes `run() -> list[tuple[str, float, float, str]]`: (measure, ratio, target, detail);
# a ratio at or under its target passes.
BENCHMARKS = ("version", "smoke", "cache", "release", "sign", "push")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    table = Table(title="benchmarks (ratios against a baseline measured in the same run)")
    for column in ("benchmark", "measure", "ratio", "target", "", "detail"):
        table.add_column(column)
    failed = False
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        for measure, ratio, target, detail in module.run():
            ok = ratio <= target
            failed |= not ok
            table.add_row(name, measure, f"{ratio:.3f}", f"<= {target}", "ok" if ok else "MISSED", detail)
    wide_console().print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
