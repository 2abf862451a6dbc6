"""Make one fingerprint set of a target model file, with any registered scheme and configuration: what
``modelprint generate`` does, so that scripts get the same checks of the owner's helper models."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..data import load_data
from ..errors import InputError
from ..fingerprints import DEFAULT_SCHEME, SCHEMES, FingerprintScheme, FingerprintSet
from ..models import ImageModel, load_model
from ..tasks import task_named
from . import owner as owner_models
from . import training_zoo


def scheme_for_generation(name: str, configuration: str, task: str, settings: dict[str, Any]) -> FingerprintScheme:
    """Scheme ``name`` in ``configuration`` (with its settings for ``task``) and ``settings`` on top.

    Raises:
        InputError: an unknown scheme, configuration or setting, or a task the scheme does not protect.
    """
    if name not in SCHEMES:
        raise InputError(f"unknown fingerprint scheme {name!r}; registered: {', '.join(sorted(SCHEMES))}")
    cls = SCHEMES[name]
    if task not in cls.tasks:
        raise InputError(f"the {name} scheme protects {', '.join(cls.tasks)} models, not {task}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"the {name} scheme has no setting {', '.join(unknown)} (it has {', '.join(sorted(known))})")
    return cls.configured(configuration, task, **settings)


def helpers_for(scheme: FingerprintScheme, configuration: str, folder: str | os.PathLike | None, target: ImageModel, data: str,
                *, device: str = "cpu", chosen: bool = True) -> dict[str, list[ImageModel]]:
    """The owner's helper models ``scheme`` reads, from a folder made by ``modelprint owner-models``.

    Args:
        chosen: whether the caller named ``configuration`` (else it is the task's default, and a missing folder
            gets a line that steers the user to make the helper models).

    Raises:
        InputError: the scheme reads helper models and no folder is given; a folder is given and it reads none; or
            the folder was made for another target or data, or holds fewer models than the configuration needs.
    """
    reads = scheme.reads()
    if not reads:
        if folder is not None:
            using = " or ".join(type(scheme).owner_models)
            other = f", or name a configuration that reads them (--configuration {using})" if using else ""
            raise InputError(f"the {scheme.name} {configuration!r} configuration reads no helper models: drop --owner-models{other}")
        return {}
    if folder is None and not chosen and configuration != "default":  # the task's default, not the scheme's
        task = target.spec.task
        raise InputError(
            f"for {task} models the {scheme.name} scheme makes its {configuration!r} configuration, which reads the owner's helper "
            f"models ({', '.join(reads)}): make them with 'modelprint owner-models --target MODEL --data DATA --out DIR' and give "
            "--owner-models DIR, or name --configuration default to make fingerprints without them (measured not to separate "
            f"a {task} target from an independent model: docs/tasks.md)"
        )
    if folder is None:
        raise InputError(
            f"the {scheme.name} {configuration!r} configuration reads the owner's helper models ({', '.join(reads)}): make them with "
            "'modelprint owner-models --target MODEL --data DATA --out DIR' and give --owner-models DIR"
        )
    manifest = owner_models.read_manifest(folder)
    wanted = type(scheme).owner_models.get(configuration, {})
    owner_models.check_manifest(manifest, target_sha256=target.spec.info["sha256"], data=data,
                                needed={role: wanted.get(role, 1) for role in reads}, where=str(folder))
    return owner_models.load_helpers(manifest, roles=reads, device=device)


def training_models_for(scheme: FingerprintScheme, folder: str | os.PathLike | None, target: ImageModel, data: str, *,
                        device: str = "cpu") -> tuple[dict[str, list[ImageModel]], dict[str, Any]]:
    """The models of the owner's training zoo ``scheme`` learns from (as ``references`` and ``surrogates``) and
    what its set records of them.

    Raises:
        InputError: the scheme learns from a training zoo and none is given, or the reverse; or the folder is not
            a training zoo of this target and data, or holds too few models.
    """
    size, checkpoints = scheme.training_zoo()
    if not size:
        raise InputError(f"the {scheme.name} scheme learns from no training zoo: drop --training-zoo")
    if folder is None:
        raise InputError(f"the {scheme.name} scheme learns from the owner's training zoo: make one with 'modelprint training-zoo --target MODEL "
                         f"--data DATA --out DIR --size {size}' and give --training-zoo DIR")
    manifest = training_zoo.read_training_zoo(folder, target_sha256=target.spec.info["sha256"], data=data)
    return training_zoo.training_helpers(manifest, size, checkpoints=checkpoints, device=device)


def generate_set(
    model: str | os.PathLike,
    *,
    data: str = "digits",
    scheme: str = DEFAULT_SCHEME,
    configuration: str | None = None,
    settings: dict[str, Any] | None = None,
    task: str | None = None,
    similarity: str = "l2",
    owner_models_dir: str | os.PathLike | None = None,
    training_zoo_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> FingerprintSet:
    """Fingerprints of the target in ``model``, made from the training split of ``data``.

    Args:
        model: the target's model file.
        data: data whose training split supplies the candidate images.
        scheme: a registered scheme's name.
        configuration: one of the scheme's named configurations; when None, the one the scheme makes for the
            target's task (:meth:`~modelprint.fingerprints.FingerprintScheme.default_configuration`), which may read
            the owner's helper models.
        settings: settings on top of the configuration (``n``, ``seed``, ...).
        task: the target's task, which the model file records (given, it must agree).
        similarity: F_c of the similarity task.
        owner_models_dir: the owner's helper models, for a configuration that reads them.
        training_zoo_dir: the owner's training zoo, for a scheme that learns from one.
        device: torch device.
        progress: show progress bars.

    Returns:
        The set (not yet saved).
    """
    target = load_model(model, device=device)
    recorded = target.spec.task
    if task is not None and task != recorded:
        raise InputError(f"--task {task}, but the model {model} is for {recorded}")
    chosen = configuration is not None
    if configuration is None:
        configuration = SCHEMES[scheme].default_configuration(recorded) if scheme in SCHEMES else "default"
    maker = scheme_for_generation(scheme, configuration, recorded, dict(settings or {}))
    helpers = helpers_for(maker, configuration, owner_models_dir, target, data, device=device, chosen=chosen)
    record = {}
    if maker.training_zoo()[0] or training_zoo_dir is not None:
        helpers, record = training_models_for(maker, training_zoo_dir, target, data, device=device)
    adapter = task_named(recorded, similarity=similarity)
    splits = load_data(data, channels=target.spec.channels, size=target.spec.input_size[0])
    candidates, pairs = adapter.candidates(splits.train)
    fingerprints = maker.generate(target, candidates.images, candidates.labels, adapter, pairs=pairs, progress=progress, **helpers)
    fingerprints.stats["scheme_repr"] = repr(maker)
    fingerprints.config.update(record)
    return fingerprints


def describe(fingerprints: FingerprintSet, out: Path | None = None) -> str:
    """One line about a set: samples, time, PSNR and thresholds."""
    stats = fingerprints.stats
    parts = [f"{len(fingerprints)} {fingerprints.scheme} fingerprints in {stats.get('generation_s', 0.0):.1f} s"]
    if isinstance(stats.get("psnr_db_mean"), (int, float)):
        parts.append(f"PSNR {stats['psnr_db_mean']:.1f} dB")
    parts += [f"t_{k.replace('white_box', 'wb').replace('black_box', 'bb')} {v:.4g}" for k, v in fingerprints.thresholds.items()]
    if fingerprints.config.get("tolerance"):
        parts.append(f"tolerance {fingerprints.config['tolerance']:.4f}")
    return ", ".join(parts) + (f" -> {out}" if out else "")
