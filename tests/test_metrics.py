import math

import pytest
import torch

from modelprint.errors import InputError
from modelprint.metrics import (
    aruc,
    calibrated_threshold,
    empirical_p_value,
    psnr,
    robustness,
    roc_auc,
    ru_curves,
    ssim,
    tpr_at_fpr,
    uniqueness,
    verdict,
)


def test_robustness_and_uniqueness_by_hand():
    positives, negatives = [1.0, 0.5, 0.2], [0.1, 0.6]
    assert robustness(positives, 0.5) == pytest.approx(2 / 3)  # MS >= rho is declared pirated
    assert uniqueness(negatives, 0.5) == pytest.approx(1 / 2)
    assert robustness(positives, 0.0) == 1.0 and uniqueness(negatives, 0.0) == 0.0


def test_aruc_by_hand():
    # rho = 0, .01, ..., 1 (101 points). R = 1 up to 0.5, then 1/2; U = 0 up to 0.25, then 1.
    # min(R, U): 0 on 26 points (0 .. .25), 1 on 25 points (.26 .. .50), 1/2 on 50 points (.51 .. 1).
    assert aruc([1.0, 0.5], [0.25]) == pytest.approx((25 + 25) / 101)
    # Perfect separation still scores 0 at rho = 0, where every suspect is declared pirated.
    assert aruc([1.0, 1.0], [0.0, 0.0]) == pytest.approx(100 / 101)
    curves = ru_curves([1.0, 0.5], [0.25])
    assert len(curves["rho"]) == 101 and curves["robustness"][50] == 1.0 and curves["robustness"][51] == 0.5


def test_roc_auc_counts_ties_half():
    assert roc_auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(3.5 / 4)
    assert roc_auc([1.0], [0.0]) == 1.0 and roc_auc([0.0], [1.0]) == 0.0


def test_tpr_at_fpr_by_hand():
    assert tpr_at_fpr([0.9, 0.6, 0.3], [0.5, 0.4], fpr=0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr([0.9, 0.6, 0.3], [0.5, 0.4], fpr=0.5) == pytest.approx(2 / 3)  # 0.4 < t <= 0.5 keeps 0.6, 0.9
    assert tpr_at_fpr([0.9, 0.6, 0.3], [0.5, 0.2], fpr=0.5) == pytest.approx(1.0)


def test_p_value_threshold_and_verdict_by_hand():
    null = [0.1, 0.8, 0.7, 0.2]
    assert empirical_p_value(0.7, null) == pytest.approx(3 / 5)  # (1 + two nulls >= 0.7) / 5
    assert empirical_p_value(0.95, null) == pytest.approx(1 / 5)
    nineteen = [i / 100 for i in range(19)]  # max 0.18
    t = calibrated_threshold(nineteen, alpha=0.05)  # p = 1/20 only above every null score
    assert 0.18 < t < 0.1801
    assert calibrated_threshold(nineteen, alpha=0.10) == pytest.approx(0.17, abs=1e-9)  # one null may lie above
    assert math.isinf(calibrated_threshold(null, alpha=0.05))  # 4 nulls cannot reach p <= 0.05
    v = verdict(0.5, nineteen, alpha=0.05)
    assert v.pirated and v.p_value == pytest.approx(0.05) and v.n_null == 19 and "p-value" in v.method
    assert not verdict(0.1, nineteen).pirated
    with pytest.raises(InputError):
        calibrated_threshold(null, alpha=1.5)
    with pytest.raises(InputError):
        aruc([], [0.1])


def test_psnr_and_ssim_by_hand():
    a = torch.zeros(1, 3, 16, 16)
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (ssim(x, noisy) < 0.9).all()
    # Constant images: SSIM reduces to the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.4 + c1) / (0.2**2 + 0.4**2 + c1)
    assert ssim(torch.full((1, 1, 12, 12), 0.2), torch.full((1, 1, 12, 12), 0.4)).item() == pytest.approx(expected, rel=1e-5)
