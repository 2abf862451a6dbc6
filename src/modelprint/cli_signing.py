"""The ``modelprint keys`` and ``modelprint records`` commands: the owner's signing keys, and checking a record.

Kept apart from :mod:`modelprint.cli`, which adds them as sub-commands; like it, this module imports nothing heavy
at start (commands import what they need when they run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The owner's Ed25519 signing keys.")
records_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evidence records: check a signed record.")
console = Console(stderr=True)
stdout = Console(soft_wrap=True)


@keys_app.command("new")
def keys_new(
    out: Path = typer.Option(..., help="Name of the key pair: writes OUT.key (private, mode 0600) and OUT.pub (public)."),
) -> None:
    """Make a signing key pair for the owner (never overwrites an existing key file)."""
    from .signing import key_fingerprint, load_private_key, new_key_files

    private_path, public_path = new_key_files(out)
    stdout.print(f"key {key_fingerprint(load_private_key(private_path))}")
    console.print(
        f"private key: {private_path} (keep it secret: it signs fingerprint sets and records); "
        f"public key: {public_path} (give it to whoever checks them)"
    )


@records_app.command("check")
def records_check(
    record: Path = typer.Argument(..., help="The evidence record (JSON) written by 'verify --sign'."),
    trusted_key: Path = typer.Option(..., help="The owner's public key (PEM, or a file holding its 64 hex digits)."),
    fingerprints: Optional[Path] = typer.Option(None, help="Also check that this fingerprint file (or watermark key) is the one the record names."),
    suspect: Optional[Path] = typer.Option(None, help="Also check that this model file is the suspect the record names."),
) -> None:
    """Check that a record is signed by the owner's key and unchanged (and, given them, that it names these files)."""
    from .evidence.check import check_record_file

    done = check_record_file(record, trusted_key, fingerprints=fingerprints, suspect=suspect)
    for line in done.checked:
        stdout.print(f"ok: {line}")
