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
    from .. import checks
    from ..integrity.signing import key_fingerprint, load_private_key, new_key_files

    for suffix in (".key", ".pub"):
        checks.output_file(f"{out}{suffix}", "--out")

    private_path, public_path = new_key_files(out)
    stdout.print(f"key {key_fingerprint(load_private_key(private_path))}")
    console.print(
        f"private key: {private_path} (keep it secret: it signs fingerprint sets and records); "
        f"public key: {public_path} (give it to whoever checks them)"
    )


@records_app.command("check")
def records_check(
    record: Path = typer.Argument(..., help="The evidence record (JSON) written by 'verify'."),
    trusted_key: Optional[Path] = typer.Option(None, help="The owner's public key (PEM, or a file holding its 64 hex digits): the record must be signed by it (required without --replay)."),
    fingerprints: Optional[Path] = typer.Option(None, help="Also check that this fingerprint file (or watermark key) is the one the record names (required with --replay)."),
    suspect: Optional[Path] = typer.Option(None, help="Also check that this model file is the suspect the record names; with --replay, the model file asked again."),
    replay: bool = typer.Option(False, "--replay", help="Ask the suspect again (--suspect FILE, or --url with --model-name) and compare with the record's journal and score: the record counts only when they match."),
    url: Optional[str] = typer.Option(None, help="With --replay: the server the record's suspect is served by."),
    model_name: Optional[str] = typer.Option(None, help="With --replay --url: the model's name on an Open Inference Protocol server (a record made through a JSON API names its mapping and needs none)."),
    journal: Optional[Path] = typer.Option(None, help="With --replay: the record's query journal [default: the path it names]."),
    sample: Optional[int] = typer.Option(None, min=1, help="With --replay --url: ask again only this many journalled images, drawn with --seed [default: every one]."),
    seed: int = typer.Option(0, help="With --replay --sample: seeds the draw."),
    kit: Optional[Path] = typer.Option(None, help="For the bundle of a 'check' (verdict.json): also check it against this kit."),
) -> None:
    """Check that a record is signed by the owner's key and unchanged (and, given them, that it names these files);
    with --replay, ask the suspect again and check that it answers as the record's journal holds."""
    from ..errors import InputError
    from ..evidence.check import check_record_file

    if not replay:
        if trusted_key is None:
            raise InputError("records check needs --trusted-key (the owner's public key), or --replay with the suspect")
        if url is not None or sample is not None or journal is not None:
            raise InputError("--url, --journal and --sample go with --replay")
        from ..evidence.check import read_record

        if "bundle_version" in read_record(record):  # the bundle of a 'check': its records, and the combined verdict
            from ..kit.check import check_bundle

            for line in check_bundle(record, trusted_key, kit=kit):
                stdout.print(f"ok: {line}")
            return
        if kit is not None:
            raise InputError("--kit goes with the bundle of a 'check' (verdict.json), not a single record")
        done = check_record_file(record, trusted_key, fingerprints=fingerprints, suspect=suspect)
        for line in done.checked:
            stdout.print(f"ok: {line}")
        return
    from ..evidence.replay import replay_record

    if fingerprints is None:
        raise InputError("--replay needs --fingerprints: the fingerprint set (or watermark key) the record names")
    replayed = replay_record(record, fingerprints=fingerprints, suspect=suspect, url=url, model_name=model_name,
                             journal=journal, sample=sample, seed=seed, trusted_key=trusted_key)
    for line in replayed.checked:
        stdout.print(f"ok: {line}")
