"""report.html renders in a real browser with its plots: a headless Chromium screenshot of a report written from
a small synthetic report (skipped where no Chromium is installed)."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from modelprint.report import write_report

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)


def _report() -> dict:
    figure = lambda v: {"mean": v, "std": 0.01, "values": [v]}  # noqa: E731
    suspects = [
        {"name": f"s{i}", "kind": kind, "transform": t, "params": {}, "test_metric": 0.7, "recovered": None, "recovery_epochs": 0,
         "ms_white_box": wb, "ms_black_box": bb}
        for i, (kind, t, wb, bb) in enumerate([("positive", "finetune", 0.9, 0.8), ("positive", "distill", 0.6, 0.5), ("negative", "independent", 0.3, 0.4), ("negative", "independent", 0.2, 0.5)])
    ]
    rho = np.linspace(0, 1, 101).tolist()
    curve = {"rho": rho, "robustness": [1 - r for r in rho], "uniqueness": rho}
    return {
        "aruc": {"white_box": figure(0.5), "black_box": figure(0.3)},
        "auc": {"white_box": figure(1.0), "black_box": figure(0.75)},
        "tpr_at_1pct_fpr": {"white_box": figure(1.0), "black_box": figure(0.5)},
        "stealth": {"acc": figure(1.0), "psnr_db": figure(24.0)},
        "target_scores": {"ms_white_box": figure(0.95), "ms_black_box": figure(0.9)},
        "suspects": suspects,
        "per_transform": {"finetune": {"kind": "positive", "count": 1, "test_metric": 0.7, "ms_white_box": 0.9, "ms_black_box": 0.8}},
        "target": {"sha256": "0" * 64, "test_metric": 0.72},
        "curves": {"white_box": curve, "black_box": curve},
        "counts": {"positives": 2, "negatives": 2, "n": 10, "repeats": 1},
        "timings_s": {"zoo_s": 1.0},
        "config": {},
        "scheme": "SaliencyFingerprint()",
        "thresholds": [{"white_box": 0.5, "black_box": 0.1}],
    }


def _screenshot(page, shot, profile) -> "np.ndarray":
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--window-size=1000,2400",
         f"--screenshot={shot}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    from matplotlib.image import imread

    return imread(shot)[..., :3]


def _coloured_share(pixels) -> float:
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    return float((saturation > 0.3).mean())


REQUIRED = os.environ.get("MODELPRINT_REQUIRE_CHROMIUM") == "1"  # set by .ci/run, which installs Chromium


@pytest.mark.skipif(CHROMIUM is None and not REQUIRED, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    assert CHROMIUM is not None, "MODELPRINT_REQUIRE_CHROMIUM=1 but no Chromium on PATH"
    html_path = write_report(_report(), tmp_path)
    # The same page without its images: what the browser shows if the embedded plots failed to decode.
    stripped = tmp_path / "stripped.html"
    stripped.write_text(re.sub(r"<img [^>]*>", "", html_path.read_text()))
    with_plots = _screenshot(html_path, tmp_path / "shot.png", tmp_path / "profile")
    without = _screenshot(stripped, tmp_path / "stripped.png", tmp_path / "profile2")
    assert with_plots.shape[0] >= 2000 and with_plots.shape[1] >= 900
    # The plots' coloured curves and points are on the page; the text and tables alone are black, white and grey.
    assert _coloured_share(without) < 1e-4
    assert _coloured_share(with_plots) > 1e-3
