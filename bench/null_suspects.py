"""The null-suspect check (modelprint.fingerprints.nulls) on every fingerprint set and watermark key under a folder:
what each null suspect scores in each mode, whether the set would be refused, and how long the check took.

    python bench/null_suspects.py runs/paper_sets
    python bench/null_suspects.py runs/digits_sets --make-digits     # first make digits sets of the schemes that read no helper models
    python bench/null_suspects.py runs/paper_sets --json nulls.json --degenerate    # also each set made degenerate (loosest thresholds, labels of one class)

A set counts as refused when any null suspect is declared a copy in any mode (``Scheme.declares_copy`` at alpha
0.05, no null scores); verification refuses only in the mode it runs. Model files and other safetensors files are
skipped. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import safe_open

from modelprint.errors import ModelprintError
from modelprint.fingerprints import FingerprintSet, nulls, scheme_for
from modelprint.fingerprints.sets import FINGERPRINT_META_KEY
from modelprint.watermarks import WatermarkKey
from modelprint.watermarks.base import WATERMARK_META_KEY

SUSPECTS = ("constant", "uniform", "fresh")
MODES = ("white-box", "black-box")


def kind_of(path: Path) -> type[FingerprintSet] | None:
    """The kind of modelprint file ``path`` is (a set or a key), from its metadata; None for anything else."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return None
    return FingerprintSet if FINGERPRINT_META_KEY in metadata else WatermarkKey if WATERMARK_META_KEY in metadata else None


def loosest(fingerprints: FingerprintSet) -> tuple[str, FingerprintSet]:
    """The set with its thresholds at their loosest (stored and per-sample): 0 where a value must reach its
    threshold (the re-hashed attack of issue 17), 1e6 for TAFA, whose distances must stay under theirs."""
    value = 1e6 if fingerprints.scheme == "tafa" else 0.0
    tensors = {k: (torch.full_like(v, value) if k.startswith("t_") else v) for k, v in fingerprints.tensors.items()}
    return f"thresholds {value:g}", replace(fingerprints, thresholds={k: value for k in fingerprints.thresholds}, tensors=tensors)


def one_class(fingerprints: FingerprintSet) -> tuple[str, FingerprintSet]:
    """A classification set with every label set to class 0."""
    return "labels all class 0", replace(fingerprints, tensors={**fingerprints.tensors, "labels": torch.zeros_like(fingerprints.labels)})


def examine(path: Path, kind: type[FingerprintSet], root: Path, degenerate: bool) -> list[dict[str, Any]]:
    """One row per examined set (and its lowered copy with ``degenerate``)."""
    name = str(path.relative_to(root))
    try:
        fingerprints = kind.load(path)
    except ModelprintError as exc:
        return [{"set": name, "scheme": "?", "refused": "invalid", "note": str(exc)[:120]}]
    rows = []
    edits = [loosest(fingerprints)] + ([one_class(fingerprints)] if fingerprints.task.get("name") == "classification" and fingerprints.scheme != "tafa" else [])
    variants = [(name, fingerprints)] + ([(f"{name} ({what})", edited) for what, edited in edits] if degenerate else [])
    for label, variant in variants:
        scheme = scheme_for(variant)
        began = time.perf_counter()
        try:
            outcomes = nulls.examine(scheme, variant, modes=scheme.modes)
        except ModelprintError as exc:  # the variant itself is invalid (a threshold of 0 where none may be)
            rows.append({"set": label, "scheme": variant.scheme, "refused": "invalid", "note": str(exc)[:120]})
            continue
        row: dict[str, Any] = {"set": label, "scheme": variant.scheme, "n": len(variant), "seconds": round(time.perf_counter() - began, 2)}
        for o in outcomes:
            row[f"{o.suspect} {o.mode}"] = None if o.score is None else round(o.score, 3)
            if o.p_value is not None:
                row[f"{o.suspect} {o.mode} p"] = o.p_value
        declared = [f"{o.suspect} {o.mode}" for o in outcomes if o.declared]
        row["refused"] = "yes: " + ", ".join(declared) if declared else "no"
        rows.append(row)
    return rows


#: Settings of the digits sets: N = 30, and fewer optimiser steps than the defaults (a measurement of the check, not
#: of the schemes; minutes on a shared CPU).
DIGITS_SETTINGS = {"saliency": {}, "ipguard": {"steps": 60}, "ltrc": {"steps": 60, "copies": 2}, "tafa": {}}


def make_digits(out: Path) -> None:
    """Sets of a digits target (ResNet-18 width 8, 4 epochs, as tests/conftest.py) by every scheme that reads no
    helper models (:data:`DIGITS_SETTINGS`); a target or set already there is kept."""
    from modelprint.data import load_data
    from modelprint.fingerprints import SCHEMES
    from modelprint.models import build_model, save_model
    from modelprint.train import TrainConfig, train_supervised

    from modelprint.models import load_model

    data = load_data("digits")
    if (out / "target.safetensors").is_file():
        target = load_model(out / "target.safetensors")
    else:
        torch.manual_seed(0)
        target = build_model("resnet18", num_outputs=10, width=8)
        train_supervised(target, data.train, TrainConfig(epochs=4, seed=0, augment="crop"), test=data.test, progress=False)
        save_model(target, out / "target.safetensors")
    target.eval()
    images, labels = data.test.images, data.test.labels
    for name, settings in DIGITS_SETTINGS.items():
        if (out / name / "fingerprints-0.safetensors").is_file():
            continue
        began = time.perf_counter()
        fingerprints = SCHEMES[name].named("default", n=30, **settings).generate(target, images, labels)
        fingerprints.save(out / name / "fingerprints-0.safetensors")
        print(f"made {name} in {time.perf_counter() - began:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a folder: every fingerprint set and watermark key under it is examined")
    parser.add_argument("--make-digits", action="store_true", help="first make digits sets into RUN (see make_digits)")
    parser.add_argument("--degenerate", action="store_true", help="also examine each set made degenerate: loosest thresholds; labels all of one class")
    parser.add_argument("--json", type=Path, help="write the rows as JSON too")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    if args.make_digits:
        make_digits(args.run)
    rows = []
    for path in sorted(args.run.rglob("*.safetensors")):
        kind = kind_of(path)
        if kind is not None:
            rows += examine(path, kind, args.run, args.degenerate)
            print(json.dumps(rows[-1]), flush=True)
    columns = [f"{s} {m}" for s in SUSPECTS for m in MODES]
    print("\n| set | scheme | N | " + " | ".join(columns) + " | refused | seconds |")
    print("|---|---|---|" + "---|" * len(columns) + "---|---|")
    for row in rows:
        cells = ["-" if row.get(c) is None else f"{row[c]:.3f}" for c in columns]
        refused = row["refused"] if row["refused"] != "invalid" else f"invalid ({row['note']})"
        print(f"| {row['set']} | {row['scheme']} | {row.get('n', '-')} | " + " | ".join(cells) + f" | {refused} | {row.get('seconds', '-')} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
