"""The trained-sampler file: what `sbi-core train-sampler` writes once per run and every generate shard reads.

Layout: one JSON header line, then the payload bytes (the networks' weights, opaque here):

    {"format": "sbi-core-sampler", "version": 1, "kind": "flow", "config_hash": ..., "sha256": ...,
     "payload_bytes": N, "meta": {...}}\\n<N payload bytes>

`sha256` covers the kind, the config hash, the meta (canonical JSON: sorted keys) and the payload, so an
edited maximum weight is caught like a flipped payload bit. Written atomically (`storage.write_bytes`:
a temporary name, then a rename or a completed upload). `read_sampler` refuses, with an `InputError`
(exit 2, no retry) that names the file: a missing file, another format or a newer version, a bad
checksum or truncation, another kind, and a file trained for another config (its config hash differs).

What to use when: `write_sampler(uri, artifact, config_hash=...)` after training; `read_sampler(uri,
config_hash=..., kind=...)` before sampling (config_hash None: a file of another run, e.g. a conditional
flow reused at a new sampling point, whose compatibility the simulator checks from the meta).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sbi_core import storage
from sbi_core.errors import InputError

__all__ = ["FORMAT", "VERSION", "SamplerArtifact", "read_sampler", "write_sampler"]

FORMAT = "sbi-core-sampler"
VERSION = 1
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class SamplerArtifact:
    """A trained proposal: its kind, what rebuilds and checks it (meta, JSON-able), and its weights (payload)."""

    kind: str
    meta: dict[str, Any]
    payload: bytes
    config_hash: str | None = None  # set when read from or written to a run
    sha256: str = field(default="", compare=False)


def _digest(kind: str, config_hash: str, meta: dict[str, Any], payload: bytes) -> str:
    head = json.dumps({"kind": kind, "config_hash": config_hash, "meta": meta}, sort_keys=True,
                      allow_nan=False).encode()
    return hashlib.sha256(head + b"\n" + payload).hexdigest()


def write_sampler(uri: str, artifact: SamplerArtifact, *, config_hash: str) -> SamplerArtifact:
    """Write the file atomically; return the artifact as written (with its config hash and checksum)."""
    try:
        digest = _digest(artifact.kind, config_hash, artifact.meta, artifact.payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sampler meta must be finite JSON: {exc}") from None
    header = {"format": FORMAT, "version": VERSION, "kind": artifact.kind, "config_hash": config_hash,
              "sha256": digest, "payload_bytes": len(artifact.payload), "meta": artifact.meta}
    line = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    storage.write_bytes(uri, line + b"\n" + artifact.payload)
    return SamplerArtifact(artifact.kind, artifact.meta, artifact.payload, config_hash, digest)


def _header(uri: str, data: bytes) -> tuple[dict[str, Any], bytes]:
    end = data.find(b"\n", 0, _MAX_HEADER)
    try:
        header = json.loads(data[:end]) if end > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"sampler file {uri}: not a {FORMAT} file (or its header is corrupt)")
    missing = [k for k in ("version", "kind", "config_hash", "sha256", "payload_bytes", "meta") if k not in header]
    if missing:
        raise InputError(f"sampler file {uri}: header lacks {missing}")
    return header, data[end + 1 :]


def read_sampler(uri: str, *, config_hash: str | None, kind: str | None = None) -> SamplerArtifact:
    """The artifact in uri, checked (module docstring); InputError naming uri otherwise."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise InputError(f"sampler file {uri} does not exist: run `sbi-core train-sampler` for this run first") \
            from None
    header, payload = _header(uri, data)
    if header["version"] != VERSION:
        raise InputError(f"sampler file {uri}: format version {header['version']!r}, this sbi-core reads {VERSION}")
    if len(payload) != header["payload_bytes"]:
        raise InputError(f"sampler file {uri}: truncated or padded ({len(payload)} payload bytes, header says "
                         f"{header['payload_bytes']})")
    try:
        digest = _digest(header["kind"], header["config_hash"], header["meta"], payload)
    except (TypeError, ValueError):
        digest = ""
    if digest != header["sha256"]:
        raise InputError(f"sampler file {uri}: checksum mismatch (the file is corrupt or was edited)")
    if kind is not None and header["kind"] != kind:
        raise InputError(f"sampler file {uri}: holds a {header['kind']!r} sampler, expected {kind!r}")
    if config_hash is not None and header["config_hash"] != config_hash:
        raise InputError(f"sampler file {uri} was trained for config hash {str(header['config_hash'])[:12]}, this "
                         f"run's is {config_hash[:12]}: run `sbi-core train-sampler` for this run")
    return SamplerArtifact(header["kind"], header["meta"], payload, header["config_hash"], digest)
