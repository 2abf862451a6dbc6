"""A watermark in a kit (``protect --watermark``): the target is marked first, and the marked model is what the kit
protects and the owner deploys; its key joins the kit beside the fingerprint sets, decided by its own exact test
(no null models), and combined with them by Bonferroni over the groups (:mod:`.combine`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..access import WhiteBox
from ..errors import InputError, IntegrityError
from ..integrity import signing
from ..models import ImageModel, load_model, save_model, state_sha256
from ..watermarks import WatermarkKey, WatermarkScheme, watermark_entry, watermark_named

#: The kit's name for the marked model (the model the owner deploys from now on).
MARKED_FILE = "marked.safetensors"


@dataclass(frozen=True)
class Marked:
    """The marked target, where it was saved, and its key's entry in the kit file."""

    path: Path
    model: ImageModel
    entry: dict[str, Any]


def watermark_maker(watermark: str, *, seed: int, settings: dict[str, Any] | None = None) -> WatermarkScheme:
    """The watermark ``SCHEME[:CONFIGURATION]`` with its settings, refused unless its mark is in the weights.

    Raises:
        InputError: an unknown scheme, configuration or setting, or a mark in an API's answers (CSP, USP: served
            with ``modelprint serve --watermark``, not carried by a model file).
    """
    name, configuration = watermark_entry(watermark)
    maker = watermark_named(name, configuration, **{**(settings or {}), "seed": seed})
    if type(maker).attach is not WatermarkScheme.attach:
        raise InputError(f"--watermark {watermark}: the {name} watermark marks an API's answers, not the model's weights; serve it with "
                         "'modelprint serve --watermark' and verify it with 'modelprint watermark verify'")
    return maker


def mark_target(host: ImageModel, *, host_sha256: str, data: str, out: Path, watermark: str, seed: int, settings: dict[str, Any] | None,
                key: signing.Ed25519PrivateKey, alpha: float = 0.05, progress: bool = True) -> Marked:
    """Mark the target (or reuse the marked model and key of an earlier run of the same kit) and check that the key
    declares the marked model.

    Args:
        host: the owner's model (left untouched).
        host_sha256: its weights' SHA-256 (what the key's recipe names).
        data: the owner's data (its training split embeds the mark; the test split is the held-out images).
        out: the kit's folder: ``marked.safetensors`` and ``watermark/NAME.safetensors`` go there.
        watermark: ``SCHEME[:CONFIGURATION]`` (:func:`watermark_maker`).
        seed: draws the key.
        settings: the scheme's settings on top of its configuration.
        key: the owner's private key; it signs the watermark key.
        alpha: the marked model must be declared by its own key at this level.
        progress: show progress bars.

    Returns:
        The marked model, its path and the key's kit entry.

    Raises:
        IntegrityError: a mark that did not take (the marked model not declared by its own key).
    """
    from ..data import load_data

    maker = watermark_maker(watermark, seed=seed, settings=settings)
    scheme, configuration = watermark_entry(watermark)
    name = scheme if configuration == "default" else f"{scheme}-{configuration}"
    marked_path, key_path = out / MARKED_FILE, out / "watermark" / f"{name}.safetensors"
    made = {"watermark": watermark, "settings": settings or {}, "seed": seed, "host_sha256": host_sha256, "data": data}
    reused = _reusable(marked_path, key_path, made, key)
    if reused is None:
        splits = load_data(data, channels=host.spec.channels, size=host.spec.input_size[0])
        marked, secret = maker.embed(host, splits.train, progress=progress, held_out=splits.test)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        save_model(marked, marked_path)
        marked = load_model(marked_path)  # as the kit's other steps will read it
        secret.stats["kit_marking"] = made
        secret.sign(key)
        secret.save(key_path)
    else:
        secret, marked = reused
    for mode in maker.modes:
        result = maker.verify(WhiteBox(marked), secret, mode=mode)
        if result.p_value is None or result.p_value > alpha:
            raise IntegrityError(f"--watermark {watermark}: the mark did not take (the marked model's {mode} p = {result.p_value}); "
                                 f"give the embedding more epochs (--set {maker.name}.epochs=N) or choose another watermark")
    entry = {"name": f"watermark-{name}", "kind": "watermark", "file": str(key_path.relative_to(out)), "sha256": secret.sha256(),
             "scheme": scheme, "configuration": configuration, "modes": list(maker.modes), "null": {}, "n": len(secret)}
    return Marked(marked_path, marked, entry)


def _reusable(marked_path: Path, key_path: Path, made: dict[str, Any], key: signing.Ed25519PrivateKey) -> tuple[WatermarkKey, ImageModel] | None:
    """The key and marked model of an earlier run of this kit, when the key was made the same way, is signed by this
    key and names the marked model that is there."""
    if not (marked_path.is_file() and key_path.is_file()):
        return None
    try:
        found = WatermarkKey.load(key_path, trusted_key=key.public_key())
        marked = load_model(marked_path)
    except (InputError, IntegrityError):  # damaged, or of another key: marked again
        return None
    return (found, marked) if found.stats.get("kit_marking") == made and found.target.get("sha256") == state_sha256(marked) else None
