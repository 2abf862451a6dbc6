"""Which fingerprint settings separate pirated copies from independent models? Not a test.

Runs fingerprint configurations over the target and zoo of one finished ``modelprint evaluate`` run (built once,
reused by every configuration) and writes a table, markdown and JSON:

    python bench/ablation.py --run runs/paper --repeats 3 --out bench/out/ablation \\
        "paper: preset=paper" "default:" "references: beta=1 references=4"

A configuration is ``NAME: SETTING=VALUE ...``: settings of ``SaliencyFingerprint`` on top of the default (values
are JSON; ``preset=paper`` or ``preset=owner`` starts from that named configuration instead), plus ``references=K``,
``surrogates=S`` and ``calibration=C``, the owner's helper models (trained once into RUN/owner and shared by all
configurations; the evaluation zoo never contains them). Thresholds come from the target and, with the
``"calibration"`` and ``"per_sample"`` rules, the owner's calibration models; nothing is fitted on the zoo's
negatives. Each configuration's run lives in OUT/NAME and resumes when restarted; rows of earlier invocations over
the same run stay in the table (a configuration of the same name replaces its row).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modelprint.fingerprints import OWNER_ROLES
from modelprint.protocol import EvaluationConfig, run_evaluation
from modelprint.fingerprints import SaliencyFingerprint
from modelprint.fingerprints.saliency import BB_SCORES

#: Words of a configuration that are not scheme settings: the starting preset and the owner's helper models.
RUN_KEYS = ("preset=", *(f"{role}=" for role in OWNER_ROLES))
KINDS = ("finetune", "retrain", "weight_prune", "filter_prune", "distill", "independent")


def parse_configuration(text: str) -> tuple[str, dict[str, Any], dict[str, int]]:
    """``"name: beta=1 references=4"`` -> (name, scheme settings, numbers of owner models by kind)."""
    name, _, rest = text.partition(":")
    settings = SaliencyFingerprint.parse_settings([a for a in rest.split() if not a.startswith(RUN_KEYS)])
    extra = dict(a.split("=", 1) for a in rest.split() if a.startswith(RUN_KEYS))
    settings["preset"] = extra.get("preset", "default")  # rows change the class defaults unless they name another
    owner = {role: int(extra[role]) for role in OWNER_ROLES if role in extra}  # the rest: what the configuration reads
    return name.strip(), settings, owner


def row_of(name: str, text: str, report: dict[str, Any]) -> dict[str, Any]:
    """The table's row of one configuration's report."""
    per_kind = report["per_transform"]
    negatives = [s for s in report["suspects"] if s["kind"] == "negative"]
    stats = report["fingerprint_stats"]
    scheme = report["config"]["scheme"] or {}
    bb_score = scheme.get("bb_score", "abs")
    row: dict[str, Any] = {"name": name, "configuration": text.partition(":")[2].strip() or "(default)"}
    for field in ("white_box", "black_box"):
        row[f"aruc_{field}"] = report["aruc"][field]["mean"]
        row[f"aruc_{field}_std"] = report["aruc"][field]["std"]
        row[f"auc_{field}"] = report["auc"][field]["mean"]
        row[f"target_{field}"] = report["target_scores"][f"ms_{field}"]["mean"]
        for kind in KINDS:
            if kind in per_kind:
                row[f"{kind}_{field}"] = per_kind[kind][f"ms_{field}"]
        row[f"max_negative_{field}"] = max(s[f"ms_{field}"] for s in negatives) if negatives else None
    row.update(
        acc=report["stealth"]["acc"]["mean"],
        psnr_db=report["stealth"]["psnr_db"]["mean"],
        dr_feature_squeezing=report["stealth"].get("dr_feature_squeezing", {}).get("mean"),
        queries_per_sample=BB_SCORES[bb_score] + (report["config"].get("task") == "similarity"),  # + the pair image
        generation_s=sum(s["generation_s"] for s in stats) / len(stats),
        owner_models=report.get("owner_models"),
    )
    return row


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """Two tables: the separation summary, then the mean matching score of each suspect kind."""
    lines = [
        "| configuration | settings | ARUC WB | ARUC BB | AUC WB | AUC BB | acc | PSNR dB | FS det. | queries/sample | gen. s | owner models: ref.+sur.+cal. (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        owner = r["owner_models"]
        owner_text = f"{owner['references']}+{owner['surrogates']}+{owner.get('calibration', 0)} ({owner['build_seconds']:.0f})" if owner else ""
        lines.append(
            f"| {r['name']} | `{r['configuration']}` | {r['aruc_white_box']:.3f} ± {r['aruc_white_box_std']:.3f} | "
            f"{r['aruc_black_box']:.3f} ± {r['aruc_black_box_std']:.3f} | {r['auc_white_box']:.3f} | {r['auc_black_box']:.3f} | "
            f"{r['acc']:.2f} | {r['psnr_db']:.1f} | {_cell(r['dr_feature_squeezing'])} | {r['queries_per_sample']} | {r['generation_s']:.0f} | {owner_text} |"
        )
    kinds = ("target", *KINDS, "max_negative")
    lines += ["", "| configuration | " + " | ".join(f"{k} WB / BB" for k in kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for r in rows:
        cells = [f"{_cell(r.get(f'{k}_white_box'))} / {_cell(r.get(f'{k}_black_box'))}" for k in kinds]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _earlier_rows(path: Path, run: Path, repeats: int) -> list[dict[str, Any]]:
    """The rows an earlier invocation wrote to the same table over the same run (a row of the same name is
    replaced by the new one), so that configurations can be added to a table without running it all again."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    same = earlier.get("run") == str(run) and earlier.get("repeats") == repeats
    return earlier["rows"] if same else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configurations", nargs="+", help="NAME: SETTING=VALUE ...")
    parser.add_argument("--run", required=True, help="a finished 'modelprint evaluate' output folder (its target and zoo are reused)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--detectors", action="store_true", help="also measure the stealth detectors (slower)")
    parser.add_argument("--out", default="bench/out/ablation")
    args = parser.parse_args()

    run = Path(args.run)
    base = json.loads((run / "report.json").read_text())["config"]
    out = Path(args.out)
    rows = _earlier_rows(out / "ablation.json", run, args.repeats)
    for text in args.configurations:
        name, settings, owner = parse_configuration(text)
        n = settings.pop("n", args.n)  # the number of samples is the evaluation's, not a scheme setting it would override
        config = EvaluationConfig(
            data=base["data"], task=base.get("task", "classification"), similarity=base.get("similarity", "l2"), arch=base["arch"], width=base["width"], epochs=base["epochs"], preset=base["preset"], zoo=base["zoo"],
            repeats=args.repeats, n=n, scheme=settings, **owner,
            executor=base["executor"], workers=base["workers"], target=str(base["target"] or run / "target.safetensors"),
            zoo_dir=str(run / "zoo"), owner_dir=str(run / "owner"), detectors=args.detectors,
        )
        report = run_evaluation(config, out / name, progress=True, log=print)
        rows = [r for r in rows if r["name"] != name] + [row_of(name, text, report)]
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.json").write_text(json.dumps({"run": str(run), "repeats": args.repeats, "rows": rows}, indent=2))
        (out / "ablation.md").write_text(markdown(rows))
        print(markdown(rows[-1:]), flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
