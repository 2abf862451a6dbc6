"""The watermarks in a report: per watermark its separation, its verdicts at alpha and what marking cost the host,
and one table and figure of the mean score per transform beside every fingerprint scheme's, so that a reader sees
which transforms remove a watermark and which remove a fingerprint."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .comparison import MODE_TITLES, _mean  # noqa: E402

Table = tuple[str, list[str], list[list[Any]]]


def tables(report: dict[str, Any]) -> list[Table]:
    """(title, header, rows) of the summary across watermarks, every watermark's figures, then the score per
    transform beside the fingerprints'."""
    out: list[Table] = [summary(report)] if len(report.get("watermarks", {})) > 1 else []
    for name, block in report.get("watermarks", {}).items():
        rows = []
        for mode, verdicts in block["verdicts"].items():
            rows.append([MODE_TITLES[mode], block["aruc"][mode], block["auc"][mode], block["tpr_at_1pct_fpr"][mode],
                         verdicts["false_positive_rate"], verdicts["true_positive_rate"], block["target_scores"].get(f"ms_{mode}")])
        out.append((f"Watermark {name}: separation, and verdicts at alpha {block['verdicts'][next(iter(block['verdicts']))]['alpha']}",
                    ["mode", "ARUC", "ROC AUC", "TPR@1%FPR", "false-positive rate at alpha", "true-positive rate at alpha", "marked model's score"], rows))
        out.append((f"Watermark {name}: fidelity of the marked model (marked vs host, test split)", ["figure", "mean ± std"],
                    [[k, v] for k, v in block["fidelity"].items()] + [["embedding s", block["embedding_s"]]]))
        if block.get("ambiguity"):
            out.append((f"Watermark {name}: the ambiguity test (keys a thief draws by the scheme's own procedure, declared at alpha)",
                        ["mode", "forged keys declared on the marked models", "forged keys declared on the negatives"],
                        [[MODE_TITLES[m], f"{a['marked_declared']} of {a['marked_trials']}", f"{a['negatives_declared']} of {a['negatives_trials']}"]
                         for m, a in block["ambiguity"].items()]))
    header, rows = per_transform(report)
    if rows:
        out.append(("Mean score per transform: watermarks (1 - bit error rate white-box, key accuracy black-box) and fingerprints (matching score)", header, rows))
    return out


SUMMARY_FIDELITY = ("test_metric_change", "kl_host_to_marked", "top1_agreement", "penultimate_distance", "total_weight_change", "last_layer_change")


def forged_text(forged: dict[str, Any]) -> str:
    """One mode's ambiguity counts (:func:`modelprint.protocol.watermark.ambiguity_counts` summed) as
    ``"declared/trials on the marked models; declared/trials on the negatives"``."""
    return f"{forged['marked_declared']}/{forged['marked_trials']}; {forged['negatives_declared']}/{forged['negatives_trials']}"


def summary(report: dict[str, Any]) -> Table:
    """One row per watermark and mode: the marked model's score, fidelity, separation (ARUC, ROC AUC), the verdict's
    false- and true-positive rates at alpha, and the forged keys declared (marked models; negatives)."""
    rows = []
    for name, block in report.get("watermarks", {}).items():
        fidelity = block.get("fidelity", {})
        for mode, verdicts in block["verdicts"].items():
            forged = block.get("ambiguity", {}).get(mode)
            rows.append([name, MODE_TITLES[mode], block["target_scores"].get(f"ms_{mode}"), *(fidelity.get(k) for k in SUMMARY_FIDELITY),
                         block["aruc"][mode], block["auc"][mode], verdicts["false_positive_rate"], verdicts["true_positive_rate"],
                         forged_text(forged) if forged else None])
    header = ["watermark", "mode", "marked model's score", "accuracy change", "KL host -> marked", "top-1 agreement", "penultimate distance",
              "total weight change", "last-layer change", "ARUC", "ROC AUC", "false positives at alpha", "true positives at alpha",
              "forged keys declared (marked; negatives)"]
    return ("Watermarks compared: fidelity, separation, verdicts and ambiguity", header, rows)


def _columns(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, per-transform figures, mode key) of every watermark mode, then every fingerprint scheme mode."""
    cols = []
    for kind, blocks in (("watermark", report.get("watermarks", {})), ("fingerprint", report.get("schemes", {}))):
        for name, block in blocks.items():
            for mode, title in MODE_TITLES.items():
                if any(f"ms_{mode}" in t for t in block["per_transform"].values()):
                    cols.append((f"{name} {title}", block["per_transform"], mode))
    return cols


def per_transform(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per transform (pirated ones first), one column per scheme and mode; blank where a scheme's zoo has no
    such suspect (the attacks on watermarks and the host are met by watermarks only)."""
    if not report.get("watermarks"):
        return [], []
    cols = _columns(report)
    names: dict[str, str] = {}
    for _, figures, _ in cols:
        for transform, entry in figures.items():
            names.setdefault(transform, entry["kind"])
    order = sorted(names, key=lambda t: (names[t] != "positive", t))
    rows = [[t, names[t], *(_mean(figures.get(t, {}).get(f"ms_{mode}")) for _, figures, mode in cols)] for t in order]
    return ["transform", "kind", *(label for label, _, _ in cols)], rows


def plot(report: dict[str, Any]):
    """Grouped bars: the mean score per transform of every watermark and fingerprint scheme, per mode."""
    header, rows = per_transform(report)
    labels, transforms = header[2:], [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(transforms) + 4), 3.8))
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(transforms))
    marks = set(report.get("watermarks", {}))
    colours = plt.get_cmap("tab20")
    for i, label in enumerate(labels):
        values = [np.nan if r[2 + i] is None else r[2 + i] for r in rows]
        marked = label.rsplit(" ", 1)[0] in marks  # a watermark's bars are hatched
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label, color=colours(i % 20),
               hatch="//" if marked else None, edgecolor="black" if marked else None, linewidth=0.4)
    ax.set_xticks(x, transforms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean score")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _cell(value: Any) -> str:
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.3f} ± {value['std']:.3f}" if value.get("std") else f"{value['mean']:.3f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    """Every table of :func:`tables` as Markdown (empty without watermarks)."""
    parts = []
    for title, header, rows in tables(report):
        lines = [f"{title}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + ("\n" if parts else "")


def plot_projection(picture: dict[str, Any], *, title: str = ""):
    """The host's and the marked model's test images side by side in the host's 2-D penultimate projection
    (:func:`modelprint.watermarks.fidelity.projection`), each point coloured by the class the model predicts: where
    the marked model's features or decision boundary moved."""
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.2), sharex=True, sharey=True)
    colours = plt.get_cmap("tab10")
    for ax, who, label in ((axes[0], "host", "host"), (axes[1], "marked", "marked model")):
        points = np.asarray(picture[who], dtype=float).reshape(-1, 2)
        classes = np.asarray(picture.get(f"{who}_class") or [0] * len(points))
        ax.scatter(points[:, 0], points[:, 1], c=[colours(int(c) % 10) for c in classes], s=6, alpha=0.7, linewidths=0)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("host's first principal axis")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("host's second principal axis")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
