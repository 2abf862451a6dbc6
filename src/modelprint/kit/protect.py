"""``modelprint protect``: everything a profile's sets need, the sets, the null models that calibrate the combined
verdict, and the signed kit file; every step reused when present, so a killed run resumes."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InputError, IntegrityError
from ..fingerprints import SCHEMES, FingerprintSet, scheme_for
from ..integrity import signing
from ..models import load_model, read_spec, state_sha256
from ..protocol.generate import generate_set, scheme_for_generation
from ..protocol.owner import build_owner_models
from ..protocol.scores import verify_all
from ..protocol.summary import MODE_KEYS
from ..protocol.training_zoo import build_training_zoo
from ..zoo.build import build_zoo
from ..zoo.spec import NEGATIVE, SuspectSpec, ZooSpec
from ..watermarks import watermark_entry
from .file import FORMAT, KIT_FILE, sign_kit
from .marking import mark_target, watermark_maker
from .profiles import Profile, custom_profile, profile_named

#: First seed of the null models: above every preset's (< 5000) and the owner's helper models' (5000-7499), below the
#: training zoo's (8000 and 9000).
NULL_SEED = 7500
MAX_NULL_MODELS = 500


def null_spec(count: int, *, epochs: int) -> ZooSpec:
    """``count`` independently trained models (fresh copies of the target's architecture on the owner's data), seeded
    apart from every other model modelprint trains."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NULL_MODELS:
        raise InputError(f"--null-models {count!r}: between 1 and {MAX_NULL_MODELS} (19 or more for a verdict at alpha 0.05)")
    return ZooSpec(tuple(SuspectSpec(f"null_{i}", NEGATIVE, "independent", {"epochs": epochs}, NULL_SEED + i) for i in range(count)))


def target_epochs(model: str | os.PathLike) -> int:
    """The epochs the target's file records it was trained for (15 when it records none)."""
    train = read_spec(model).info.get("train") or {}
    epochs = train.get("epochs") if isinstance(train, dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1 else 15


def check_settings(profile: Profile, settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Settings per scheme, each scheme one of the profile's.

    Raises:
        InputError: a scheme the profile does not make.
    """
    schemes = [u.scheme for u in profile.uses]
    for name in settings:
        if name not in schemes:
            raise InputError(f"--set {name}.*: the {profile.name} profile makes no {name} set (it makes {', '.join(schemes)})")
    for use in profile.uses:  # an unknown setting or value: refused before any work
        scheme_for_generation(use.scheme, use.configuration, profile.task, {**dict(use.settings), **settings.get(use.scheme, {})})
    return settings


def check_request(profile: Profile, settings: dict[str, dict[str, Any]], *, watermark: str | None, seed: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The fingerprint sets' settings (:func:`check_settings`) and the watermark's (those under its scheme's name),
    each checked before any work.

    Raises:
        InputError: a setting of no set, an unknown setting or watermark, or a watermark in an API's answers.
    """
    settings = dict(settings)
    marking = settings.pop(watermark_entry(watermark)[0], {}) if watermark else {}
    if watermark:
        watermark_maker(watermark, seed=seed, settings=marking)
    return check_settings(profile, settings), marking


def plan(profile: Profile, null_models: int) -> dict[str, Any]:
    """What a profile trains, by part: the models to train and the sets to make."""
    counts = profile.owner_counts()
    return {"null_models": null_models, "helper_models": counts, "training_zoo": profile.training_zoo_size(), "sets": [u.name for u in profile.uses],
            "models_to_train": null_models + sum(counts.values()) + profile.training_zoo_size()}


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Adds the wall seconds of the block to ``timings[key]``."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def _reusable(path: Path, scheme: str, settings: dict[str, Any], target_sha: str, key: signing.Ed25519PrivateKey) -> FingerprintSet | None:
    """A set made by an earlier run of the same kit, when it is the one this run would make and signed by this key."""
    if not path.is_file():
        return None
    try:
        found = FingerprintSet.load(path, trusted_key=key.public_key())
    except (InputError, IntegrityError):  # a damaged file, or one of another key: made again
        return None
    made = found.stats.get("kit_settings")
    return found if found.scheme == scheme and made == settings and found.target.get("sha256") == target_sha else None


def build_kit(
    model: str | os.PathLike,
    *,
    data: str,
    out: str | os.PathLike,
    key: signing.PrivateKeySource,
    profile: str = "fast",
    schemes: str | None = None,
    n: int = 100,
    seed: int = 0,
    null_models: int = 20,
    epochs: int | None = None,
    owner_models_dir: str | os.PathLike | None = None,
    training_zoo_dir: str | os.PathLike | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    watermark: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: None,
    **executor: Any,
) -> dict[str, Any]:
    """Make (or finish) the kit of a target in ``out``.

    Args:
        model: the target's model file.
        data: the owner's data (its training split makes the sets and trains the owner's models).
        out: the kit's folder.
        key: the owner's private key; it signs every set and the kit file.
        profile: a profile's name (:data:`~modelprint.kit.profiles.PROFILES`).
        schemes: the owner's own choice of sets instead of a profile (:func:`~modelprint.kit.profiles.custom_profile`).
        n: fingerprints per set.
        seed: the sets' seed.
        null_models: independently trained models that calibrate the combined verdict (K; its p-value is at least
            1 / (K + 1)).
        epochs: training epochs of every model the kit trains [default: the target's own].
        owner_models_dir, training_zoo_dir: existing folders of helper models / a training zoo to use instead of
            the kit's own.
        settings: per scheme of the profile, settings on top of its configuration (``{"ipguard": {"steps": 100}}``);
            the watermark's under its scheme's name.
        watermark: ``SCHEME[:CONFIGURATION]`` of a watermark in the weights: the target is marked first, the kit
            protects the marked model (``KIT/marked.safetensors``, the one to deploy) and holds the key
            (:mod:`.marking`).
        progress: show progress bars.
        log: where to write one line per step.
        **executor: ``executor``, ``workers``, ``ray_address``, ``device`` for the models trained.

    Returns:
        The kit file's content (signed).
    """
    out = Path(out)
    private = signing.load_private_key(key)
    target = load_model(model)
    task = target.spec.task
    chosen = custom_profile(schemes, task) if schemes else profile_named(profile, task)
    epochs = epochs or target_epochs(model)
    nulls = null_spec(null_models, epochs=epochs)
    settings, marking = check_request(chosen, settings or {}, watermark=watermark, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    host = {"file": str(model), "sha256": state_sha256(target)}
    marked = None
    if watermark:
        log(f"watermark {watermark}: the target is marked first; the kit protects the marked model")
        with _timed(timings, "watermark_s"):
            marked = mark_target(target, host_sha256=host["sha256"], data=data, out=out, watermark=watermark, seed=seed, settings=marking,
                                 key=private, progress=progress)
        model, target = marked.path, marked.model
    target_sha = state_sha256(target) if marked else host["sha256"]

    counts = chosen.owner_counts()
    if counts and owner_models_dir is None:
        log(f"helper models: {', '.join(f'{v} {k}' for k, v in counts.items())}")
        owner_models_dir = out / "owner-models"
        with _timed(timings, "helper_models_s"):
            build_owner_models(counts, model, data, owner_models_dir, epochs=epochs, progress=progress, **executor)
    size = chosen.training_zoo_size()
    if size and training_zoo_dir is None:
        log(f"training zoo: {size} models")
        training_zoo_dir = out / "training-zoo"
        with _timed(timings, "training_zoo_s"):
            build_training_zoo(size, model, data, training_zoo_dir, epochs=epochs, progress=progress, **executor)
    log(f"null models: {null_models} independently trained models")
    with _timed(timings, "null_models_s"):
        manifest = build_zoo(nulls, model, data, out / "null-models", role="null", progress=progress, **executor)

    entries = []
    (out / "sets").mkdir(exist_ok=True)
    (out / "nulls").mkdir(exist_ok=True)
    for use in chosen.uses:
        path = out / "sets" / f"{use.name}.safetensors"
        own = {**dict(use.settings), **settings.get(use.scheme, {}), "n": n, "seed": seed}
        made = {"scheme": use.scheme, "configuration": use.configuration, "settings": own, "data": data}
        configured = SCHEMES[use.scheme].configured(use.configuration, task)  # what it reads: only those folders go to it
        with _timed(timings, f"set_{use.name}_s"):
            the_set = _reusable(path, use.scheme, made, target_sha, private)
            if the_set is None:
                log(f"set {use.name}: {n} fingerprints")
                the_set = generate_set(model, data=data, scheme=use.scheme, configuration=use.configuration, settings=own,
                                       owner_models_dir=owner_models_dir if configured.reads() else None,
                                       training_zoo_dir=training_zoo_dir if configured.training_zoo()[0] else None,
                                       device=executor.get("device", "cpu"), progress=progress)
                the_set.stats["kit_settings"] = made
                the_set.sign(private)
                the_set.save(path)
        scheme = scheme_for(the_set)
        with _timed(timings, f"null_scores_{use.name}_s"):
            scores = verify_all(scheme, the_set, manifest["suspects"], out / "nulls" / f"{use.name}.json", progress)
            null = {mode: [scores[s.name][f"ms_{MODE_KEYS[mode]}"] for s in nulls.suspects] for mode in scheme.modes}
            for mode in scheme.modes:  # a set that would declare a suspect which never saw the target a copy is refused now
                try:
                    scheme.check_not_degenerate(the_set, modes=(mode,), null_scores=null[mode], what=str(path))
                except IntegrityError as exc:
                    raise IntegrityError(f"{exc}; make this set with other settings (--set {use.scheme}.SETTING=VALUE) or choose other sets (--schemes)") from None
        entries.append({"name": use.name, "file": f"sets/{use.name}.safetensors", "sha256": the_set.sha256(), "scheme": use.scheme,
                        "configuration": use.configuration, "modes": list(scheme.modes), "thresholds": the_set.thresholds,
                        "n": len(the_set), "null": null, "generation_s": the_set.stats.get("generation_s")})

    kit = {
        "format": FORMAT,
        "target": {"file": str(model), "sha256": target_sha, "arch": target.spec.arch, "task": task, "data": data},
        "host": host if marked else None,
        "profile": {"name": chosen.name, "uses": [u.name for u in chosen.uses], "measured": chosen.measured},
        "sets": entries + ([marked.entry] if marked else []),
        "null_models": {"count": null_models, "seeds": [s.seed for s in nulls.suspects], "epochs": epochs, "recipe": "independent",
                        "training_seconds": sum(r.get("build_seconds", 0.0) for r in manifest["suspects"])},
        "helpers": {"owner_models": str(owner_models_dir) if owner_models_dir else None, "training_zoo": str(training_zoo_dir) if training_zoo_dir else None},
        "combination": {"rule": "minimum-rank permutation test over the sets against the null models (modelprint.kit.combine)"
                                + (", Bonferroni with the watermark's exact test" if marked else ""),
                        "floor": 1 / (null_models + 1)},
        "timings_s": timings,
    }
    from ..evidence.record import strict_json_data, write_record

    kit = sign_kit(strict_json_data(kit), private)
    write_record(kit, out / KIT_FILE)
    return kit
