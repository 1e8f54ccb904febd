"""bench/lint_precision.py: the per-rule precision and recall figures come out of a judged corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import lint_precision


def test_run_and_score_a_judged_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "a").mkdir(parents=True)
    (corpus / "b").mkdir()
    (corpus / "a" / "Dockerfile").write_text('FROM node:20.1\nCOPY . .\nRUN npm ci\nUSER 1\nCMD ["node"]\n')
    (corpus / "b" / "app.Dockerfile").write_text('FROM alpine\nUSER 1\nCMD ["x"]\n')
    findings = tmp_path / "findings.tsv"
    assert lint_precision.run(corpus, None, findings) == 0
    rows = [line.split("\t")[:4] for line in findings.read_text().splitlines()]
    assert ["a/Dockerfile", "3", "PL101", "error"] in rows and [
        "b/app.Dockerfile",
        "1",
        "PL301",
        "error",
    ] in rows
    judgements = tmp_path / "judgements.tsv"
    verdicts = {"PL101": "right", "PL205": "right", "PL301": "wrong"}
    lines = [f"{file}\t{line}\t{code}\t{verdicts[code]}\tnote" for file, line, code, _ in rows]
    lines.append("b/app.Dockerfile\t2\tPL102\tmiss\ta fault the linter did not report")
    judgements.write_text("# file\tline\tcode\tverdict\tnote\n" + "\n".join(lines) + "\n")
    capsys.readouterr()
    assert lint_precision.score(findings, judgements) == 0
    out = capsys.readouterr().out
    assert "overall precision: 2/3 = 66.7%" in out
    assert "error precision:   1/2 = 50.0%" in out
    assert "cache-order recall: 1/2 = 50.0%" in out


def test_unjudged_findings_fail_the_score(tmp_path: Path) -> None:
    findings = tmp_path / "findings.tsv"
    findings.write_text("a/Dockerfile\t1\tPL301\terror\tmessage\n")
    judgements = tmp_path / "judgements.tsv"
    judgements.write_text("")
    assert lint_precision.score(findings, judgements) == 1
