"""Other read-outs of the saliency sets of a finished evaluation, computed on its own sets and suspects. Not a test.

The fingerprints are not regenerated: each suspect's per-sample values are read once, then scored by

- ``stored``: the set's own per-sample thresholds (what the evaluation reported);
- ``surrogate-anchored``: per sample, midway between the calibration models' mean and the surrogates' mean
  (for the white-box group, whose stored thresholds sit midway to the target instead);
- ``quarter-way``: per sample, a quarter of the way from the calibration models' mean to the surrogates' mean (a
  bar for the copy that keeps a quarter of what the owner's surrogates show, not half);
- ``above calibration``: the share of samples on which the suspect's value exceeds every calibration model's (a
  rank test: an innocent model exchangeable with the K calibration models scores 1 / (K + 1) on average);
- ``P over controls`` (black-box): the share of samples on which masking P moves F_c more than masking any of the
  other corner cells or the centre cell of the grid (the same size): a read-out relative to the suspect's own
  response to masking;
- ``log-ratio`` (black-box): log(change at P / mean change at the control cells), thresholded per sample midway
  between the calibration models' and the surrogates' means;
- ``held-apart anchored`` (with ``--held-apart``): per sample, midway between the calibration models' mean and the
  mean of surrogates that generation never saw (by name, from RUN/owner_recipes: ``research/surrogate_recipes.py
  --train-only``), whose own scores by the stored thresholds are printed after the table;

and prints, per read-out and mode, ROC AUC and ARUC over the 3 sets (paper zoo alone, and with the distillation
family), the two lowest students and the highest independent model per set. ``--negatives-from`` adds the
independent models of another zoo on the same data (say, of another architecture) to the negatives;
``--recipe-surrogates`` adds surrogates of ``research/surrogate_recipes.py`` (by name, from RUN/owner_recipes) to the
owner's, for the sets that folder made with them:

    python research/readouts.py runs/paper_distill
    python research/readouts.py runs/paper_distill --negatives-from runs/vgg_distill/zoo
    python research/readouts.py runs/paper_distill --scheme-folder saliency-tvw \
        --recipe-surrogates surrogate_transfer_6100,surrogate_vgg11_bn_6101 \
        --held-apart surrogate_transfer_6102,surrogate_vgg11_bn_6103,surrogate_paper_6104,surrogate_paper_6105
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from modelprint.access import WhiteBox
from modelprint.fingerprints.saliency.objective import bb_change, masked
from modelprint.fingerprints.saliency.readout import black_box_values, rows_read_by, white_box_values
from modelprint.fingerprints.sets import FingerprintSet
from modelprint.metrics import aruc, roc_auc
from modelprint.models import load_model
from modelprint.zoo.spec import FAMILY_SEED


def control_cells(pattern: torch.Tensor) -> list[torch.Tensor]:
    """One-cell grid masks: the four corners and the centre, those in P left out."""
    h, w = pattern.shape
    cells = {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)} - {tuple(cell) for cell in pattern.nonzero().tolist()}
    masks = []
    for r, c in sorted(cells):
        mask = torch.zeros(h, w)
        mask[r, c] = 1.0
        masks.append(mask)
    return masks


def control_changes(model: torch.nn.Module, fingerprints: FingerprintSet) -> torch.Tensor:
    """Per control cell and sample, how far masking that cell moves F_c (the set's ``bb_score``); row 0 is P."""
    task, how, x = fingerprints.task_adapter(), fingerprints.config.get("bb_score", "abs"), fingerprints.samples
    fill, cond = float(fingerprints.config.get("fill", 0.0)), task.condition_from(fingerprints.labels, None)
    with torch.no_grad():
        def score(images: torch.Tensor) -> torch.Tensor:
            return task.score_deployed(task.deployed(model(images)), cond)
        before = score(x)
        rows = []
        for grid in [fingerprints.tensors["pattern"], *control_cells(fingerprints.tensors["pattern"])]:
            rows.append(bb_change(how, before, score(masked(x, grid, fill))))
    return torch.stack(rows)


def read_models(run: Path, negatives_from: Path | None = None, recipe_surrogates: tuple[str, ...] = (),
                held_apart: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every model of the run: the target, the owner's helper models (by role; ``recipe_surrogates`` of
    RUN/owner_recipes join the surrogates, ``held_apart`` ones have a role of their own), the zoo's suspects, and the
    independent models of another zoo (``negatives_from``, named ``other:NAME``)."""
    models = {"target": {"kind": "target", "role": "target", "path": run / "target.safetensors"}}
    if negatives_from is not None:
        for record in json.loads((negatives_from / "manifest.json").read_text())["suspects"]:
            if record["kind"] == "negative":
                models[f"other:{record['name']}"] = {"kind": "negative", "role": "independent", "path": record["path"], "other": True}
    for folder in ("owner", "zoo"):
        for record in json.loads((run / folder / "manifest.json").read_text())["suspects"]:
            role = record["name"].rpartition("_")[0] if folder == "owner" else record["transform"]
            family = folder == "zoo" and FAMILY_SEED <= record["seed"] < FAMILY_SEED + 50
            models[record["name"]] = {"kind": record["kind"], "role": role, "path": record["path"], "family": family}
    if recipe_surrogates or held_apart:
        records = {r["name"]: r for r in json.loads((run / "owner_recipes" / "manifest.json").read_text())["suspects"]}
        missing = sorted(set(recipe_surrogates + held_apart) - set(records))
        if missing:
            raise ValueError(f"{', '.join(missing)} not in {run / 'owner_recipes'}")
        for role, names in (("surrogate", recipe_surrogates), ("held-apart", held_apart)):
            for name in names:
                models[name] = {"kind": "positive", "role": role, "path": records[name]["path"], "family": False}
    return models


def values_of(models: dict[str, dict], fingerprints: FingerprintSet) -> dict[str, dict[str, torch.Tensor]]:
    """Per model (loaded in ``models[name]["model"]``): white-box values, black-box values and control changes of
    the rows each mode reads."""
    white, black = rows_read_by(fingerprints, "white-box"), rows_read_by(fingerprints, "black-box")
    task = fingerprints.task_adapter()
    out = {}
    for name, info in models.items():
        model = info["model"]
        access = WhiteBox(model)
        out[name] = {"wb": white_box_values(access, white), "bb": black_box_values(access.black_box(task), black),
                     "controls": control_changes(model, black)}
    return out


def readouts(values: dict, models: dict, fingerprints: FingerprintSet) -> dict[tuple[str, str], dict[str, float]]:
    """Per (read-out, mode): every zoo suspect's score (and every held-apart surrogate's)."""
    def of_role(role: str, read) -> torch.Tensor:
        """``read(values of a model)`` for every model of ``role``, stacked."""
        return torch.stack([read(values[n]) for n, m in models.items() if m["role"] == role])

    def log_ratio(changes: torch.Tensor) -> torch.Tensor:
        return (changes[0] + 1e-4).log() - (changes[1:].mean(dim=0) + 1e-4).log()

    keys = ("wb", "bb")
    stored = {mode: rows_read_by(fingerprints, mode).tensors[f"t_{mode.replace('-', '_')}"] for mode in ("white-box", "black-box")}
    null = {key: of_role("calibration", lambda v: v[key]).mean(dim=0) for key in keys}
    pirated = {key: of_role("surrogate", lambda v: v[key]).mean(dim=0) for key in keys}
    bars = {  # per-sample thresholds between the calibration models' mean and an anchor
        "surrogate-anchored": {key: (null[key] + pirated[key]) / 2 for key in keys},  # the stored rule's arithmetic, to the bit
        "quarter-way": {key: (3 * null[key] + pirated[key]) / 4 for key in keys},
    }
    highest_null = {key: of_role("calibration", lambda v: v[key]).max(dim=0).values for key in keys}
    null_ratio = of_role("calibration", lambda v: log_ratio(v["controls"])).mean(dim=0)
    pirated_ratio = of_role("surrogate", lambda v: log_ratio(v["controls"])).mean(dim=0)
    rules = {
        ("stored", "white-box"): lambda v: v["wb"] >= stored["white-box"],
        ("stored", "black-box"): lambda v: v["bb"] >= stored["black-box"],
    }
    for name, bar in bars.items():
        rules[(name, "white-box")] = lambda v, bar=bar: v["wb"] >= bar["wb"]
        rules[(name, "black-box")] = lambda v, bar=bar: v["bb"] >= bar["bb"]
    rules.update({
        ("above calibration", "white-box"): lambda v: v["wb"] > highest_null["wb"],
        ("above calibration", "black-box"): lambda v: v["bb"] > highest_null["bb"],
        ("P over controls", "black-box"): lambda v: v["controls"][0] > v["controls"][1:].max(dim=0).values,
        ("log-ratio", "black-box"): lambda v: log_ratio(v["controls"]) >= (null_ratio + pirated_ratio) / 2,
    })
    if any(m["role"] == "held-apart" for m in models.values()):
        held = {key: (null[key] + of_role("held-apart", lambda v: v[key]).mean(dim=0)) / 2 for key in keys}
        rules[("held-apart anchored", "white-box")] = lambda v: v["wb"] >= held["wb"]
        rules[("held-apart anchored", "black-box")] = lambda v: v["bb"] >= held["bb"]
    suspects = [n for n, m in models.items() if m["role"] not in ("target", "reference", "surrogate", "calibration")]
    return {rule: {n: float(test(values[n]).float().mean()) for n in suspects} for rule, test in rules.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished evaluation with the owner configuration's sets")
    parser.add_argument("--scheme-folder", default="saliency", help="the folder of the sets in RUN")
    parser.add_argument("--negatives-from", type=Path, help="a zoo folder (same data) whose independent models join the negatives, e.g. of another architecture")
    parser.add_argument("--recipe-surrogates", default="", help="surrogates of RUN/owner_recipes (comma-separated names) that join the owner's")
    parser.add_argument("--held-apart", default="", help="surrogates of RUN/owner_recipes (comma-separated names) the sets were made without, for the held-apart anchor")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        models = read_models(args.run, args.negatives_from, tuple(n for n in args.recipe_surrogates.split(",") if n),
                             tuple(n for n in args.held_apart.split(",") if n))
    except ValueError as error:
        parser.error(f"--recipe-surrogates / --held-apart: {error}")
    for info in models.values():
        info["model"] = load_model(info["path"]).eval()
    sets = sorted((args.run / args.scheme_folder).glob("fingerprints-*.safetensors"))
    per_set = []
    for path in sets:
        fingerprints = FingerprintSet.load(path)
        per_set.append(readouts(values_of(models, fingerprints), models, fingerprints))
    family = {n for n, m in models.items() if m.get("family")}
    held = {n for n, m in models.items() if m["role"] == "held-apart"}
    other = [n for n, m in models.items() if m.get("other")]
    print("| read-out | mode | zoo | ROC AUC | ARUC | lowest students | highest independent |" + (" highest other zoo's independent |" if other else "")
          + "\n|---|---|---|---|---|---|---|" + ("---|" if other else ""))
    for rule in per_set[0]:
        for zoo, excluded in (("paper", family), ("paper + family", set())):
            aucs, arucs, lows, highs = [], [], [], []
            for scores in per_set:
                kept = {n: s for n, s in scores[rule].items() if n not in excluded | held}
                pos = [s for n, s in kept.items() if models[n]["kind"] == "positive"]
                neg = [s for n, s in kept.items() if models[n]["kind"] == "negative"]
                students = {n: s for n, s in kept.items() if models[n]["role"] == "distill"}
                aucs.append(roc_auc(pos, neg))
                arucs.append(aruc(pos, neg))
                lows.append(" / ".join(f"{n} {students[n]:.2f}" for n in sorted(students, key=students.get)[:2]))
                highs.append(max(neg))
            highest_other = [max(scores[rule][n] for n in other) for scores in per_set] if other else []
            print(f"| {rule[0]} | {rule[1]} | {zoo} | {sum(aucs) / len(aucs):.3f} | {sum(arucs) / len(arucs):.3f} | "
                  f"{'; '.join(lows)} | {', '.join(f'{h:.2f}' for h in highs)} |" + (f" {', '.join(f'{h:.2f}' for h in highest_other)} |" if other else ""))
    for mode in ("white-box", "black-box"):
        for name in sorted(held):
            per = ", ".join(f"{scores['stored', mode][name]:.2f}" for scores in per_set)
            print(f"held apart, stored thresholds, {mode}: {name} {per}")


if __name__ == "__main__":
    main()
