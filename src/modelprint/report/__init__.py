"""Plots and a self-contained HTML report from the report data of :func:`modelprint.protocol.run_evaluation`."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import comparison, watermarks  # noqa: E402,F401
from .comparison import MODE_TITLES  # noqa: E402


def plot_curves(report: dict[str, Any]):
    """R(rho) and U(rho) of both modes (first repeat), with min(R, U) shaded: its mean is the ARUC."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, (mode, title) in zip(axes, MODE_TITLES.items()):
        curve = report["curves"].get(mode)
        if curve:
            rho = np.array(curve["rho"])
            r, u = np.array(curve["robustness"]), np.array(curve["uniqueness"])
            ax.plot(rho, r, label="robustness R", color="tab:red")
            ax.plot(rho, u, label="uniqueness U", color="tab:blue")
            ax.fill_between(rho, np.minimum(r, u), alpha=0.2, color="gray", label="min(R, U)")
            value = report["aruc"][mode]["mean"]
            ax.set_title(f"{title}: ARUC {value:.3f}")
        ax.set_xlabel("threshold rho on the matching score")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of suspects")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def comparison_tables(report: dict[str, Any]) -> str:
    """The comparison of schemes: separation, cost and stealth per scheme, the mean score per transform, and which
    scheme leads on which metric (:mod:`.comparison`)."""
    header, table, per_header, per_rows = comparison.rows(report)
    paragraphs = "".join(f"<p>{html.escape(text)}</p>" for text in comparison.leaders(report))
    return (f"<h2>Schemes compared</h2>{_table(header, table)}{paragraphs}"
            f"<h3>Mean matching score per transform</h3>{_table(per_header, per_rows)}")


def plot_scores(report: dict[str, Any]):
    """Matching scores of every suspect, positives against negatives, per mode."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    kinds = {"positive": "tab:red", "negative": "tab:blue"}
    for ax, (mode, title) in zip(axes, MODE_TITLES.items()):
        for i, (kind, color) in enumerate(kinds.items()):
            values = [s[f"ms_{mode}"] for s in report["suspects"] if s["kind"] == kind]
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(values))
            ax.scatter(np.full(len(values), i) + jitter, values, color=color, alpha=0.7, s=22)
        ax.set_xticks(range(len(kinds)), [f"{k}s" for k in kinds])
        ax.set_title(f"{title} matching scores")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("matching score MS")
    fig.tight_layout()
    return fig


def plot_gallery(arrays: dict[str, np.ndarray], names: dict[str, str]):
    """Originals, fingerprints, and the Grad-CAM of the target, a positive and a negative on the fingerprints."""
    originals, samples = arrays["originals"], arrays["samples"]
    cams = [(key[4:], arrays[key]) for key in arrays if key.startswith("cam_")]
    rows = 2 + len(cams)
    count = len(samples)
    fig, axes = plt.subplots(rows, count, figsize=(1.5 * count, 1.55 * rows), squeeze=False)

    def show(ax, image):
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1) if image.shape[0] == 3 else image[0], cmap=None if image.shape[0] == 3 else "gray")

    for j in range(count):
        show(axes[0, j], originals[j])
        show(axes[1, j], samples[j])
        for i, (_, maps) in enumerate(cams):
            axes[2 + i, j].imshow(maps[j], cmap="jet", vmin=0, vmax=1)
    labels = ["original", "fingerprint"] + [f"CAM: {names.get(name, name)}" for name, _ in cams]
    for i, label in enumerate(labels):
        axes[i, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _png(fig, path: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.3f} ± {value['std']:.3f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _tar(task: dict) -> str:
    """The target's true-accept rates at fixed false-accept rates (similarity)."""
    rates = task.get("target_tar_at_far") or {}
    return "".join(f", TAR {_fmt(v)} at FAR {html.escape(k)}" for k, v in rates.items())


def _owner_models(report: dict) -> str:
    owner = report.get("owner_models")
    if not owner:
        return ""
    return (f" Generation used the owner's {owner['references']} reference, {owner['surrogates']} surrogate and"
            f" {owner.get('calibration', 0)} calibration models ({owner['build_seconds']:.0f} s to train).")


def _training_zoo(report: dict) -> str:
    zoo = report.get("training_zoo")
    if not zoo:
        return ""
    return (f" The owner's training zoo: {zoo['positives']} pirated and {zoo['models'] - zoo['positives']} independent models"
            f" and {zoo['checkpoints']} checkpoints ({zoo['build_seconds']:.0f} s to train), none in the evaluation zoo.")


def _recovery(suspect: dict) -> str:
    """Recovery epochs of a pruned suspect, marked when the metric did not come back within the rule's margin."""
    epochs = suspect.get("recovery_epochs", 0)
    if not epochs:
        return ""
    return f"{epochs}" if suspect.get("recovered") else f"{epochs} (not recovered)"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Write the PNG plots and ``report.html`` (images embedded) into ``out_dir``; return the HTML path."""
    out = Path(out_dir)
    images = {}
    if report["curves"]:
        images["Robustness and uniqueness"] = _png(plot_curves(report), out / "curves.png")
        images["Matching scores of positives and negatives"] = _png(plot_scores(report), out / "scores.png")
    compared = len(report.get("schemes", {})) > 1
    if compared:
        for mode, title in MODE_TITLES.items():
            images[f"Schemes compared, {title}"] = _png(comparison.plot_mode(report, mode), out / f"compare-{mode}.png")
    if report.get("watermarks"):
        images["Mean score per transform: watermarks (hatched) and fingerprints"] = _png(watermarks.plot(report), out / "watermarks.png")
        for name, block in report["watermarks"].items():
            if block.get("projection"):
                title = f"Watermark {name}: the host's and the marked model's test images in the host's 2-D penultimate projection (colour: predicted class)"
                images[title] = _png(watermarks.plot_projection(block["projection"]), out / f"fidelity-{name.replace(':', '-')}.png")
    gallery_file = out / "gallery.npz"
    if gallery_file.is_file():
        with np.load(gallery_file) as arrays:
            images["Fingerprints and their saliency"] = _png(plot_gallery(dict(arrays), report.get("gallery", {})), out / "gallery.png")

    modes = list(MODE_TITLES)
    headline = _table(
        ["figure"] + [MODE_TITLES[m] for m in modes],
        [[name] + [report[key][m] for m in modes] for name, key in (("ARUC", "aruc"), ("ROC AUC", "auc"), ("TPR at 1% FPR", "tpr_at_1pct_fpr"))],
    )
    stealth = _table(["figure", "mean ± std"], [[k, v] for k, v in report["stealth"].items()])
    task = report.get("task", {"name": "classification", "metric_name": "accuracy"})
    metric = f"test {task['metric_name'].replace('_', ' ')}"
    suspects = _table(
        ["suspect", "kind", "transform", "params", metric, "recovery epochs", "MS white-box", "MS black-box"],
        [
            [s["name"], s["kind"], s["transform"], s["params"], s["test_metric"], _recovery(s), s["ms_white_box"], s["ms_black_box"]]
            for s in report["suspects"]
        ],
    )
    per_transform = _table(
        ["transform", "kind", "suspects", f"mean {metric}", "mean MS white-box", "mean MS black-box"],
        [[name, t["kind"], t["count"], t["test_metric"], t["ms_white_box"], t["ms_black_box"]] for name, t in report["per_transform"].items()],
    )
    marks = "".join(f"<h2>{html.escape(title)}</h2>{_table(header, rows)}" for title, header, rows in watermarks.tables(report))
    timings = _table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()])
    config = html.escape(str(report["config"]))
    figures = "".join(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>" for title, data in images.items())
    target = report["target"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelprint evaluation</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}th{{background:#f3f3f3}}img{{max-width:100%}}
code{{font-size:12px}}</style></head><body>
<h1>modelprint evaluation</h1>
<p>Task: {html.escape(task['name'])}. Target: {html.escape(metric)} {_fmt(target.get('test_metric'))}{_tar(task)}, weights <code>{html.escape(str(target.get('sha256'))[:16])}…</code>;
{report['counts']['positives']} positives, {report['counts']['negatives']} negatives, N = {report['counts']['n']},
{report['counts']['repeats']} repeat(s). Scheme: <code>{html.escape(str(report.get('scheme')))}</code></p>
<p>The target's own matching score: white-box {_fmt(report.get('target_scores', {}).get('ms_white_box'))},
black-box {_fmt(report.get('target_scores', {}).get('ms_black_box'))}.{_owner_models(report)}{_training_zoo(report)}</p>
{comparison_tables(report) if compared else ""}
<h2>Separation{html.escape(f" ({report.get('scheme_name')})" if compared else "")}</h2>{headline}
<p>Thresholds per repeat: {html.escape(', '.join(f"t_wb {t['white_box']:.4g}, t_bb {t['black_box']:.4g}" for t in report['thresholds']))}</p>
<h2>Stealth</h2>{stealth}
{figures}
<h2>Per transform</h2>{per_transform}
{marks}
<h2>Suspects</h2>{suspects}
<h2>Timings</h2>{timings}
<h2>Configuration</h2><p><code>{config}</code></p>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
