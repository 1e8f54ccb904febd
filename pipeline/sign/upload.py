"""Putting a signature or an attestation that cosign made into a registry, in cosign's tag scheme, with our
own registry client.

Why not `cosign attach` / a cosign run that uploads: after the gate every cosign process pays a start, a
registry ping, a credential lookup and new connections before its few requests: 0.13 s to an open registry
and 0.2-0.3 s to one with a login, for the signature and again for the attestation, and all of it between
the last smoke test and the first tag. Our client still holds the connections and tokens of the push, so
the same upload is two small blobs and a manifest. cosign makes every signature and attestation (the key
never leaves it); this module only files them where cosign looks for them:

- the image `sha256-<hex>.sig` (signatures) or `.att` (attestations) in the signed image's repository, an OCI
  manifest whose layers are the signed payloads: for a signature the simple-signing payload
  (`application/vnd.dev.cosign.simplesigning.v1+json`) with its base64 signature in the annotation
  `dev.cosignproject.cosign/signature`; for an attestation the DSSE envelope
  (`application/vnd.dsse.envelope.v1+json`), the annotation empty and `predicateType` naming the statement;
- a layer is added to what the tag holds (another signature of the same payload stays); an attestation of the same predicate type is replaced (as
  `cosign attest --replace` does), so a rerun of a digest leaves one smoke statement.

The tests check the result with the cosign CLI itself (`cosign verify`, `cosign verify-attestation`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.distribution import BlobUploader, Manifest, RegistryClient
from pipeline.sign.cosign import signature_tag

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
ATTESTATION_LAYER = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


@dataclass(frozen=True)
class Layer:
    """One signed thing, as a layer of the `.sig` or `.att` image."""

    media_type: str
    content: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.content).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "size": len(self.content),
            "digest": self.digest,
            "annotations": dict(self.annotations),
        }


def signature_layer(payload: bytes, signature: str) -> Layer:
    """`cosign sign --upload=false`'s payload and base64 signature (its output files)."""
    return Layer(SIGNATURE_LAYER, payload, {SIGNATURE_ANNOTATION: signature.strip()})


def attestation_layer(envelope: bytes, predicate_type: str) -> Layer:
    """`cosign attest --no-upload`'s DSSE envelope (its standard output, less the newline it prints)."""
    return Layer(
        ATTESTATION_LAYER,
        envelope.rstrip(b"\n"),
        {SIGNATURE_ANNOTATION: "", "predicateType": predicate_type},
    )


def same_predicate(layer: Layer) -> Callable[[Mapping[str, Any]], bool]:
    """Which layers already there the new attestation replaces: those of its predicate type."""
    wanted = layer.annotations.get("predicateType")
    return lambda existing: (
        bool(wanted) and (existing.get("annotations") or {}).get("predicateType") == wanted
    )


def attach(
    client: RegistryClient,
    repository: str,
    digest: str,
    kind: Literal["sig", "att"],
    layer: Layer,
    replaces: Callable[[Mapping[str, Any]], bool] = lambda existing: False,
) -> str:
    """Add `layer` to the `.sig` (kind "sig") or `.att` (kind "att") image of `digest` in `repository` (a
    path in the registry, no host); returns the tag. What the tag held stays, but for what `replaces`."""
    tag = signature_tag(digest, kind)
    new = layer.descriptor()
    # Another signature of the same payload (another key, or cosign's own upload) is a layer of the same
    # digest with another annotation: it stays. Only the very same layer is not added twice.
    layers = [
        existing
        for existing in _layers_at(client, repository, tag)
        if not _same(existing, new) and not replaces(existing)
    ]
    layers.append(new)
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]},
        },
        separators=(",", ":"),
    ).encode()
    config_layer = Layer(OCI_CONFIG, config)
    _upload(client, repository, [layer, config_layer])
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_layer.digest},
            "layers": layers,
        },
        separators=(",", ":"),
    ).encode()
    client.put_manifest(
        repository, tag, Manifest(OCI_MANIFEST, body, "sha256:" + hashlib.sha256(body).hexdigest())
    )
    return tag


def _same(existing: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(existing.get("digest") == new["digest"] and existing.get("annotations") == new["annotations"])


def _layers_at(client: RegistryClient, repository: str, tag: str) -> list[dict[str, Any]]:
    if client.manifest_digest(repository, tag) is None:
        return []
    layers: list[dict[str, Any]] = client.get_manifest(repository, tag).document.get("layers") or []
    return layers


def _upload(client: RegistryClient, repository: str, blobs: list[Layer]) -> None:
    uploader = BlobUploader(client, repository)
    with tempfile.TemporaryDirectory(prefix="pipeline-sign-upload-") as scratch:
        for blob in blobs:
            path = Path(scratch) / blob.digest.removeprefix("sha256:")
            path.write_bytes(blob.content)
            uploader.upload_blob(blob.digest, path)
