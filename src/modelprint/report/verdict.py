"""A self-contained HTML page of a kit's verdict on one suspect (``check``) or many (``scan``), for a reader who is
not a specialist: what was asked, what answered, each set's score against the owner's independent models, and
the combined verdict with its false-positive rate."""

from __future__ import annotations

import base64
import html
import json
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STYLE = ("<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
          ".pirated{color:#a00;font-weight:bold}.clear{color:#060;font-weight:bold}img{max-width:100%}</style>")


def _esc(value: Any) -> str:
    return html.escape(f"{value:.3f}" if isinstance(value, float) else str(value))


def plot_sets(bundle: dict[str, Any]) -> str:
    """Each set's null scores (grey dots) and the suspect's score (red bar), as a base64 PNG."""
    sets = [e for e in bundle["sets"] if e.get("null_scores")]  # a watermark's exact test has no null models to draw
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.55 * len(sets)))
    for row, entry in enumerate(sets):
        null = entry["null_scores"]
        ax.scatter(null, [row] * len(null), color="0.55", s=18, label="independent models (the owner's null models)" if row == 0 else None)
        ax.plot([entry["score"]] * 2, [row - 0.3, row + 0.3], color="#c00", lw=3, label="the suspect" if row == 0 else None)
    ax.set_yticks(range(len(sets)), [f"{e['set']} ({e['mode']})" for e in sets])
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("matching score")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


_WATERMARK = (" A watermark key's inputs are answered as the owner's marked model answers them by the marked model and its copies; "
              "its own exact test gives the chance that a model without the mark answers that many of them so.")


def judged_against(entry: dict[str, Any]) -> str:
    """What a bundle's set is judged against, in words: the null models' highest score, or a watermark's exact test."""
    if entry.get("null_scores"):
        return f"independent models up to {max(entry['null_scores']):.3f}"
    return f"its own exact test: p = {(entry.get('verdict') or {}).get('p_value', float('nan')):.3g}"


def verdict_page(bundle: dict[str, Any]) -> str:
    """The page of one check's bundle."""
    combined = bundle["combined"]
    css = "pirated" if combined["pirated"] else "clear"
    kit, suspect = bundle["kit"], bundle["suspect"]
    asked = suspect.get("url") or suspect.get("path") or "?"
    rows = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in (e["set"], e["mode"], e["score"], judged_against(e),
                                                         combined["ranks"].get(f"{e['set']} ({e['mode']})", ""), e["images_used"], e["record"])) + "</tr>"
        for e in bundle["sets"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>modelprint verdict</title>{_STYLE}</head><body>"
            f"<h1>Is this model a copy of the owner's?</h1><p class='{css}'>{_esc(bundle['statement'])}</p>"
            f"<h2>What was asked</h2><p>The owner's kit <code>{_esc(kit['folder'])}</code> (SHA-256 <code>{_esc(kit['sha256'][:16])}…</code>, "
            f"signed by key <code>{_esc(kit['key_fingerprint'][:16])}</code>, profile {_esc(kit.get('profile'))}) protects the target "
            f"<code>{_esc((kit.get('target') or {}).get('sha256', '')[:16])}…</code>. Suspect: <code>{_esc(asked)}</code>.</p>"
            f"<h2>What answered</h2><p>Each fingerprint set asks the suspect its own questions; its matching score is the share of answers "
            f"that match the owner's model. The owner's {combined['null_models']} independently trained models were asked the same questions "
            f"when the kit was made (grey): a copy stands out to the right of them.{_WATERMARK if combined.get('exact') else ''}</p>"
            f"<img alt='scores' src='data:image/png;base64,{plot_sets(bundle)}'>"
            f"<table><thead><tr><th>set</th><th>mode</th><th>suspect's score</th><th>judged against</th><th>rank (1 = above all)</th>"
            f"<th>images sent or read</th><th>evidence record</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<h2>The combined verdict</h2><p>p = {combined['p_value']:.4g} (alpha {combined['alpha']:g}): {_esc(combined['rule'])}.</p>"
            f"<p>A third party checks a signed bundle (<code>check --sign</code>), its records and this verdict with "
            f"<code>modelprint records check verdict.json --trusted-key OWNER.pub --kit KIT</code>.</p></body></html>")


def write_verdict_page(bundle: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`verdict_page` to ``path``."""
    path = Path(path)
    path.write_text(verdict_page(bundle))
    return path


def write_bundle_page(bundle_path: str | Path) -> Path:
    """Write the page of the bundle file ``bundle_path`` (a check's ``verdict.json``) beside it, as ``.html``."""
    bundle_path = Path(bundle_path)
    return write_verdict_page(json.loads(bundle_path.read_text()), bundle_path.with_suffix(".html"))


def scan_page(rows: list[dict[str, Any]], *, alpha: float, kit: dict[str, Any], pages: dict[str, str] | None = None) -> str:
    """The page of a scan: one row per suspect, most evident first, a column per set of the kit.

    Args:
        rows: the scan's rows, ranked (:func:`~modelprint.kit.scan.scan`).
        alpha: the false-positive rate of each combined verdict.
        kit: the kit's folder and digest.
        pages: suspect -> the path of its verdict page, relative to the scan page (a link on its name).
    """
    pages = pages or {}
    sets = list(dict.fromkeys(name for r in rows for name in r.get("scores", {})))
    verdict = lambda r: "PIRATED" if r.get("pirated") else ("error" if r.get("error") else "not shown")  # noqa: E731
    name = lambda r: (f"<a href='{_esc(pages[r['suspect']])}'>{_esc(r['suspect'])}</a>" if r["suspect"] in pages else _esc(r["suspect"]))  # noqa: E731
    cells = lambda r: (f"<td colspan='{max(1, len(sets))}'>{_esc(r['error'])}</td>" if r.get("error")  # noqa: E731
                       else "".join(f"<td>{r['scores'][s]:.3f}</td>" if s in r.get("scores", {}) else "<td></td>" for s in sets))
    p = lambda r: f"{r['p_value']:.3g}" if "p_value" in r else ""  # noqa: E731
    body = "".join(f"<tr><td>{i + 1}</td><td>{name(r)}</td><td class='{'pirated' if r.get('pirated') else 'clear'}'>{verdict(r)}</td>"
                   f"<td>{p(r)}</td>{cells(r)}</tr>" for i, r in enumerate(rows))
    head = "".join(f"<th>{_esc(s)}</th>" for s in sets) or "<th>scores</th>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>modelprint scan</title>{_STYLE}</head><body>"
            f"<h1>{len(rows)} suspects against the kit <code>{_esc(kit.get('folder'))}</code></h1>"
            f"<p>Ranked by the combined p-value (smallest first), then by the mean score; PIRATED where p <= {alpha:g}. "
            "Each set's column is the suspect's score with that set; a suspect's name opens its own page (its scores against "
            "the owner's independent models).</p>"
            f"<table><thead><tr><th>#</th><th>suspect</th><th>verdict</th><th>p</th>{head}</tr></thead><tbody>{body}</tbody></table>"
            "</body></html>")
