"""Sign what passed the gate, and attest that it passed: cosign signatures and a smoke-test attestation.

The release gate signs the index digest in every registry, and attests with an in-toto statement of our
own predicate type (`PREDICATE_TYPE`, documented in the README) what was tested, after every smoke test of
the run passed and before any tag moves. Both point at the digest, so they hold for every tag that later
points there. `pipeline verify REF` checks both, and that the statement covers every platform of the index.

The package, by layer:
- `predicate`: the statement's content (pure);
- `cosign`: the cosign CLI: provisioning, command lines (pure), running with bounded retries;
- `signing`: the release gate's side: the key checked before the build, signatures made ahead while the
  smoke tests run, uploaded only once they all passed;
- `verify`: checking an image (`pipeline verify`, `--require-signature`);
- `cli`: the `verify` and `cosign` commands.
"""

from __future__ import annotations

from pipeline.sign.cosign import (
    COSIGN_OVERRIDE,
    SCHEME,
    Held,
    Verifier,
    attest_args,
    ensure_cosign,
    run_cosign,
    sign_args,
    signature_tag,
    verify_args,
    verify_attestation_args,
)
from pipeline.sign.predicate import PREDICATE_TYPE, file_digest, smoke_predicate
from pipeline.sign.signing import (
    GateSigning,
    Signer,
    SigningAhead,
    SignRecord,
    sign_tested,
    signer_for,
    start_signer,
)
from pipeline.sign.verify import (
    Verification,
    coverage_problems,
    parse_reference,
    require_signed_digests,
    require_signed_references,
    smoke_problems,
    verified_if_required,
    verifier_for,
    verify_image,
)

__all__ = [
    "COSIGN_OVERRIDE",
    "PREDICATE_TYPE",
    "SCHEME",
    "GateSigning",
    "Held",
    "SignRecord",
    "Signer",
    "SigningAhead",
    "Verification",
    "Verifier",
    "attest_args",
    "coverage_problems",
    "ensure_cosign",
    "file_digest",
    "parse_reference",
    "require_signed_digests",
    "require_signed_references",
    "run_cosign",
    "sign_args",
    "sign_tested",
    "signature_tag",
    "signer_for",
    "smoke_predicate",
    "smoke_problems",
    "start_signer",
    "verified_if_required",
    "verifier_for",
    "verify_args",
    "verify_attestation_args",
    "verify_image",
]
