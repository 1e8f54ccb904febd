"""What signing and attesting add to a release: the same gated release of the example image (two
registries, one with htpasswd auth; two platforms), with and without `[sign]`, in the same run.

Both sides are `python -m pipeline release` against the same two local registries, each run into a fresh
namespace, with warm build caches: one warm-up each, then they alternate, median of five. The signed side
signs the index digest and attests its smoke results in both registries with a key from the environment
(cosign, tag scheme), which the plain side does not. Target: signed / plain <= 1.15.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
from pathlib import Path

from bench.bench_release import Bench, alternate
from pipeline.engine import ensure_engine
from tests.fixtures.cosign import generate_key_pair

TARGET = 1.15
# More rounds than the release bench: the effect (a second or so) is smaller than a loaded machine's noise.
ROUNDS = 5
KEY_ENV, PASSWORD_ENV = "BENCH_COSIGN_KEY", "BENCH_COSIGN_PASSWORD"


def _key_pair(directory: Path) -> tuple[str, str]:
    password = secrets.token_hex(12)
    key, _ = generate_key_pair(directory, password)
    return key, password


def run() -> list[tuple[str, float, float, str]]:
    ensure_engine()
    with tempfile.TemporaryDirectory(prefix="bench-sign-") as scratch, Bench(Path(scratch)) as bench:
        bench.prepare()
        key, password = _key_pair(Path(scratch))
        signing = f'\n[sign]\nmethod = "key"\nkey_env = "{KEY_ENV}"\npassword_env = "{PASSWORD_ENV}"\n'
        secrets_env = {KEY_ENV: key, PASSWORD_ENV: password}
        plain_times, signed_times = alternate(
            bench.pipeline_release,
            lambda: bench.pipeline_release(extra_config=signing, extra_env=secrets_env),
            ROUNDS,
        )
        # bench.steps holds every run's timings in order: warm-ups first, then plain and signed alternating.
        plain_steps, signed_steps = bench.steps[2::2], bench.steps[3::2]
        plain_cpu, signed_cpu = statistics.median(bench.cpu[2::2]), statistics.median(bench.cpu[3::2])
    plain, signed = statistics.median(plain_times), statistics.median(signed_times)
    sign_step = statistics.median(steps.get("sign", 0.0) for steps in signed_steps)
    # The in-process view (the report's `total`, without interpreter start-up and exit): less exposed to the
    # noise of a loaded machine between processes.
    signed_total = statistics.median(t.get("total", 0.0) for t in signed_steps)
    unsigned_total = statistics.median(t.get("total", 0.0) for t in plain_steps)
    breakdown = "; ".join(
        f"{step} {statistics.median(t.get(step, 0.0) for t in plain_steps):.2f}/"
        f"{statistics.median(t.get(step, 0.0) for t in signed_steps):.2f}"
        for step in ("plan", "build", "push", "smoke", "sign", "promote", "total")
    )
    return [
        (
            "signed release / unsigned release",
            signed / plain,
            TARGET,
            f"unsigned {plain:.2f}s ({'/'.join(f'{t:.2f}' for t in plain_times)}), signed {signed:.2f}s "
            f"({'/'.join(f'{t:.2f}' for t in signed_times)}), median of {ROUNDS} after a warm-up each; the "
            f"sign step (sign + attest, 2 registries, in parallel) {sign_step:.2f}s median; steps unsigned/signed "
            f"(median s): {breakdown}; in-process totals {signed_total:.2f}s / {unsigned_total:.2f}s = "
            f"{signed_total / unsigned_total:.3f}; CPU of the release's own processes (median): unsigned "
            f"{plain_cpu:.2f}s, signed {signed_cpu:.2f}s",
        )
    ]
