"""The comparison of schemes in a report: one table (HTML or Markdown), one figure per mode, and a paragraph that says,
from the figures, which scheme leads on which metric."""

from __future__ import annotations

from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODE_TITLES = {"white_box": "white-box", "black_box": "black-box"}

#: The columns of the comparison table: (header, how to read it from a scheme's block, larger is better).
Column = tuple[str, Callable[[dict[str, Any]], Any], bool]


def _mean(value: Any) -> float | None:
    """A figure's mean (``{"mean", "std", "values"}`` or a number); None when absent."""
    if isinstance(value, dict):
        value = value.get("mean")
    return float(value) if isinstance(value, (int, float)) else None


def columns() -> list[Column]:
    """Separation per mode, cost and stealth, in the order the table shows them."""
    cols: list[Column] = []
    for label, key in (("ARUC", "aruc"), ("ROC AUC", "auc"), ("TPR@1%FPR", "tpr_at_1pct_fpr")):
        for mode, title in MODE_TITLES.items():
            cols.append((f"{label} {title}", lambda b, key=key, mode=mode: b[key][mode], True))
    cols += [
        ("queries black-box", lambda b: b["queries"].get("black_box"), False),
        ("generation s", lambda b: b["generation_s"], False),
        ("PSNR dB", lambda b: b["stealth"].get("psnr_db"), True),
        ("SSIM", lambda b: b["stealth"].get("ssim"), True),
        ("Feature Squeezing", lambda b: b["stealth"].get("dr_feature_squeezing"), False),
        ("Deep SVDD", lambda b: b["stealth"].get("dr_deepsvdd"), False),
    ]
    return cols


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict) and "mean" in value:
        mean, std = value["mean"], value.get("std") or 0.0
        digits = 3 if abs(mean) < 10 else 1 if abs(mean) < 1000 else 0
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10:  # counts (queries)
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The comparison table and the mean-score-per-transform table, as header and rows of cell texts."""
    blocks = report["schemes"]
    header = ["scheme", *[c[0] for c in columns()]]
    table = [[name, *[_cell(read(block)) for _, read, _ in columns()]] for name, block in blocks.items()]
    transforms = list(next(iter(blocks.values()))["per_transform"])
    per_header = ["transform", *[f"{name} {MODE_TITLES[m]}" for name in blocks for m in MODE_TITLES]]
    per_rows = [[t, *[_cell(blocks[name]["per_transform"][t].get(f"ms_{m}")) for name in blocks for m in MODE_TITLES]] for t in transforms]
    return header, table, per_header, per_rows


def markdown(report: dict[str, Any]) -> str:
    """The comparison table, the mean score per transform and the leaders' paragraph, as Markdown."""
    header, table, per_header, per_rows = rows(report)

    def md(head: list[str], body: list[list[str]]) -> str:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])

    return f"{md(header, table)}\n\nMean matching score per transform:\n\n{md(per_header, per_rows)}\n\n" + "\n\n".join(leaders(report)) + "\n"


def leaders(report: dict[str, Any]) -> list[str]:
    """Paragraphs: one sentence per metric naming the scheme that leads on it (ties named together), with its figure
    and the runner-up's; then which scheme keeps the most on each kind of copy and matches independent models least."""
    blocks = report["schemes"]
    sentences = []
    for label, read, larger in columns():
        figures = {name: _mean(read(block)) for name, block in blocks.items()}
        known = {name: v for name, v in figures.items() if v is not None}
        if len(known) < 2:
            continue
        ranked = sorted(known.items(), key=lambda item: -item[1] if larger else item[1])
        best = ranked[0][1]
        tied = [name for name, v in ranked if abs(v - best) <= 5e-4]
        rest = [(name, v) for name, v in ranked if name not in tied]
        tail = f"; next {rest[0][0]} {rest[0][1]:.3g}" if rest else ""
        sentences.append(f"{label}: {_names(tied)} {'lead' if len(tied) > 1 else 'leads'} ({best:.3g}{tail}).")
    per_kind = []
    transforms = next(iter(blocks.values()))["per_transform"]
    for transform, first in transforms.items():
        for mode, title in MODE_TITLES.items():
            known = {name: _mean(b["per_transform"][transform].get(f"ms_{mode}")) for name, b in blocks.items()}
            known = {k: v for k, v in known.items() if v is not None}
            if len(known) < 2:
                continue
            larger = first.get("kind") == "positive"
            best = (max if larger else min)(known.values())
            tied = [name for name, v in known.items() if abs(v - best) <= 5e-3]
            verb = ("keep" if len(tied) > 1 else "keeps") + " the most" if larger else ("match" if len(tied) > 1 else "matches") + " the least"
            per_kind.append(f"{transform} ({title}): {_names(tied)} {verb} ({best:.2f})")
    return [" ".join(sentences)] + (["Per kind of suspect: " + "; ".join(per_kind) + "."] if per_kind else [])


def plot_mode(report: dict[str, Any], mode: str):
    """One mode's comparison: R (solid) and U (dashed) against the threshold per scheme, and each scheme's matching
    scores of positives (red) and negatives (blue), first repeat."""
    blocks = report["schemes"]
    fig, (curves, scores) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, block) in enumerate(blocks.items()):
        curve = block["curves"].get(mode)
        if curve:
            rho = np.array(curve["rho"])
            colour = colours[i % len(colours)]
            aruc = _mean(block["aruc"][mode])
            curves.plot(rho, curve["robustness"], color=colour, label=f"{name} (ARUC {aruc:.3f})")
            curves.plot(rho, curve["uniqueness"], color=colour, linestyle="--")
        for j, (kind, colour) in enumerate((("positive", "tab:red"), ("negative", "tab:blue"))):
            values = [s["schemes"][name][f"ms_{mode}"] for s in report["suspects"] if s["kind"] == kind and name in s.get("schemes", {})]
            jitter = np.random.default_rng(j).uniform(-0.15, 0.15, len(values))
            scores.scatter(np.full(len(values), i) + (j - 0.5) * 0.4 + jitter * 0.5, values, color=colour, alpha=0.6, s=14,
                           label=f"{kind}s" if i == 0 else None)
    curves.set_xlabel("threshold rho on the matching score")
    curves.set_ylabel("R (solid), U (dashed)")
    curves.set_title(f"{MODE_TITLES[mode]}: robustness and uniqueness")
    curves.legend(fontsize=7, loc="lower left")
    curves.grid(alpha=0.3)
    scores.set_xticks(range(len(blocks)), list(blocks), fontsize=8)
    scores.set_ylim(-0.05, 1.05)
    scores.set_title(f"{MODE_TITLES[mode]}: matching scores")
    scores.legend(fontsize=7)
    scores.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
