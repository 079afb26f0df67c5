"""Signed models: a detached Ed25519 signature of manifest.yaml, checked before anything is loaded.

The manifest pins every file by size and sha256, so one signature over the manifest's bytes covers every byte of
the model. Whoever can write the model directory can rewrite the manifest too; without the private key they
cannot make a signature that a device's public key accepts.

- Keys are standard PEM files (`openssl genpkey -algorithm ed25519 -out private.pem`, `openssl pkey -in
  private.pem -pubout -out public.pem`). The signature file holds the raw 64-byte Ed25519 signature, so
  `openssl pkeyutl -verify -pubin -inkey public.pem -rawin -in manifest.yaml -sigfile manifest.yaml.sig`
  checks it without this package.
- A device may trust several keys (files, or a folder of .pem files): any one of them verifying is enough. That is
  how a key is rotated: devices get the new public key beside the old one, models are signed with the new one,
  then the old public key is removed.
- The signature is checked on the manifest's bytes as read once, and those same bytes are parsed (a manifest
  swapped after its check is never the one used); then every file a run can open is hashed against it.

The verification is done by `cryptography` (pyca), imported only when a key is given.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ManifestError
from .integrity import mismatched_files

if TYPE_CHECKING:
    from .manifest import Manifest

SIGNATURE_NAME = "manifest.yaml.sig"
SIGNATURE_BYTES = 64  # an Ed25519 signature
KEY_PASSWORD_ENV = "EDGE_SER_KEY_PASSWORD"  # the passphrase of an encrypted private key, if it has one
MAX_KEY_BYTES = 64 * 1024  # a PEM key is a few hundred bytes: a larger "key" is not read whole
KeyPaths = str | Path | Sequence[str | Path]


class SignatureError(ManifestError):
    """A signed model that cannot be trusted, or a key that cannot be used: one line that says which and why."""


def _read_small(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_BYTES + 1)
    except OSError as err:
        raise SignatureError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if len(data) > MAX_KEY_BYTES:
        raise SignatureError(f"{path}: not a {what} (over {MAX_KEY_BYTES // 1024} KiB; a PEM key is a few hundred "
                             "bytes)")
    return data


def key_files(keys: KeyPaths) -> list[Path]:
    """The PEM files `keys` names: files as given, folders replaced by the *.pem files in them (sorted)."""
    given = [keys] if isinstance(keys, (str, Path)) else list(keys)
    files: list[Path] = []
    for key in map(Path, given):
        if key.is_dir():
            inside = sorted(p for p in key.glob("*.pem") if p.is_file())
            if not inside:
                raise SignatureError(f"{key}: no public keys (*.pem) in this folder")
            files.extend(inside)
        else:
            files.append(key)
    if not files:
        raise SignatureError("no public key given: name a PEM file or a folder of them")
    return files


def load_public_keys(keys: KeyPaths) -> list:
    """Ed25519 public keys from PEM files or folders of them; one SignatureError naming a file that is missing,
    not PEM, or of another algorithm."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    loaded = []
    for path in key_files(keys):
        pem = _read_small(path, "public key")
        try:
            key = load_pem_public_key(pem)
        except ValueError:
            raise SignatureError(f"{path}: not a PEM public key (make one with: openssl pkey -in private.pem "
                                 "-pubout -out public.pem)") from None
        loaded.append(_ed25519(key, Ed25519PublicKey, path, "public"))
    return loaded


def load_private_key(path: str | Path):
    """An Ed25519 private key from a PEM file (encrypted ones with the passphrase in $EDGE_SER_KEY_PASSWORD)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = Path(path)
    password = os.environ.get(KEY_PASSWORD_ENV)
    pem = _read_small(path, "private key")
    try:
        key = load_pem_private_key(pem, password.encode() if password else None)
    except TypeError:
        raise SignatureError(f"{path}: the private key is encrypted: put its passphrase in ${KEY_PASSWORD_ENV}") from None
    except ValueError:
        raise SignatureError(f"{path}: not a PEM private key, or a wrong passphrase (make one with: openssl "
                             "genpkey -algorithm ed25519 -out private.pem)") from None
    return _ed25519(key, Ed25519PrivateKey, path, "private")


def _ed25519(key, kind: type, path: Path, which: str):
    """`key` if it is an Ed25519 key of `kind`; else one line naming its algorithm."""
    if not isinstance(key, kind):
        raise SignatureError(f"{path}: {_algorithm(key)} {which} key; edge-ser signatures are Ed25519 "
                             "(openssl genpkey -algorithm ed25519)")
    return key


def _algorithm(key) -> str:
    """'an RSA', 'an EC', ... for a key of another algorithm than Ed25519."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519

    kinds = ((rsa, "an RSA"), (ec, "an EC (ECDSA)"), (dsa, "a DSA"), (ed448, "an Ed448"), (x25519, "an X25519"),
             (x448, "an X448"))
    return next((name for module, name in kinds
                 if any(isinstance(key, getattr(module, cls)) for cls in dir(module) if cls.endswith("Key"))),
                "another kind of")


def key_id(public_key) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def sign_model(directory: str | Path, private_key: str | Path) -> tuple[Path, str]:
    """Write DIRECTORY/manifest.yaml.sig, a signature of the manifest's bytes; (its path, the key's id). Refuses
    a model whose files do not match its manifest: a signature would vouch for files that are not there."""
    from .manifest import load_manifest, read_manifest_bytes

    directory = Path(directory)
    key = load_private_key(private_key)
    manifest_bytes = read_manifest_bytes(directory)
    manifest = load_manifest(directory, manifest_bytes)
    bad = mismatched_files(directory, manifest)
    if bad:
        raise SignatureError(f"{directory}: not signing a model whose files do not match its manifest: {', '.join(bad)}")
    target = directory / SIGNATURE_NAME
    partial = target.with_suffix(".sig.tmp")
    partial.write_bytes(key.sign(manifest_bytes))
    partial.replace(target)  # atomic: a reader sees the old signature or the new one, never half of one
    return target, key_id(key.public_key())


def load_signed_manifest(directory: str | Path, public_keys: KeyPaths) -> Manifest:
    """The manifest of a signed model, parsed from the very bytes whose signature one of `public_keys` accepted.
    SignatureError when the model is not signed or the signature fits none of the keys (a wrong key and a
    changed manifest look alike: a signature only tells that these bytes were signed by that key)."""
    from cryptography.exceptions import InvalidSignature

    from .manifest import load_manifest, read_manifest_bytes

    directory = Path(directory)
    keys = load_public_keys(public_keys)
    manifest_bytes = read_manifest_bytes(directory)
    signature_path = directory / SIGNATURE_NAME
    if not signature_path.is_file():
        raise SignatureError(f"{directory}: the model is not signed (no {SIGNATURE_NAME}); refusing it because a "
                             "public key was given (sign it with: edge-ser sign MODEL --key private.pem)")
    signature = _read_small(signature_path, "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"{signature_path}: {len(signature)} bytes; an Ed25519 signature is {SIGNATURE_BYTES}")
    for key in keys:
        try:
            key.verify(signature, manifest_bytes)
            break
        except InvalidSignature:
            continue
    else:
        raise SignatureError(f"{directory}: the signature of manifest.yaml matches none of the {len(keys)} trusted "
                             "public key(s): signed with another key, or the manifest was changed after signing")
    return load_manifest(directory, manifest_bytes)


def require_files(directory: str | Path, manifest: Manifest, precision: str | None = None) -> None:
    """Refuse, in one line, a model any of whose files (those a run at `precision` opens, or all) is missing or
    does not match the manifest: a signed model is checked whole before anything is loaded."""
    bad = mismatched_files(directory, manifest, precision)
    if bad:
        raise SignatureError(f"{directory}: {len(bad)} file(s) do not match the signed manifest: {', '.join(bad)}")
