"""LTRC: the frequency filter on an image of known spectrum, RC's robustness to weight noise, labels-only verification;
and `--schemes all` choosing the schemes that protect the task."""

import math

import pytest
import torch
from torch.func import functional_call

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import InputError
from modelprint.fingerprints import LTRC
from modelprint.fingerprints.ltrc import frequency_filter, perturbed_parameters
from modelprint.protocol.config import EvaluationConfig
from modelprint.tasks import Classification, Regression


def _waves(size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """0.5 + a slow wave (1 cycle per image down the rows: radius 2/16 = 0.125) + a fast one (7 cycles across the
    columns: radius 14/16 = 0.875), and the two waves alone."""
    i = torch.arange(size, dtype=torch.float64)
    slow = 0.2 * torch.cos(2 * math.pi * i / size)[:, None].expand(size, size)
    fast = 0.1 * torch.cos(2 * math.pi * 7 * i / size)[None, :].expand(size, size)
    return (0.5 + slow + fast)[None, None], slow[None, None], fast[None, None]


def test_the_filter_removes_exactly_the_frequencies_it_claims():
    image, slow, fast = _waves()
    assert torch.allclose(frequency_filter(image, 0.5, "low_pass"), 0.5 + slow, atol=1e-12)
    assert torch.allclose(frequency_filter(image, 0.5, "high_pass"), 0.5 + fast, atol=1e-12)  # the mean stays
    assert torch.allclose(frequency_filter(image, 0.1, "low_pass"), torch.full_like(image, 0.5), atol=1e-12)
    assert torch.allclose(frequency_filter(image, 0.9, "low_pass"), image, atol=1e-12)


def test_rc_examples_keep_their_label_under_weight_noise_more_often_than_c_examples(digits, digits_target):
    """Seeded: 20 examples each, 5 steps, delta 0.2; kept label = the target's stored top-1 on 20 noisy copies."""
    kept = {}
    for variant in ("C", "RC"):
        scheme = LTRC(n=20, variant=variant, steps=5, lr=0.05, delta=0.2, copies=4, seed=0)
        fingerprints = scheme.generate(digits_target, digits.test.images[:4], digits.test.labels[:4])
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            kept[variant] = float(torch.stack([
                functional_call(digits_target, perturbed_parameters(digits_target, 0.2, generator), (fingerprints.samples,)).argmax(dim=1) == fingerprints.labels
                for _ in range(20)
            ]).float().mean())
    assert kept["RC"] > kept["C"] + 0.05, kept


def test_labels_only_access_gives_the_white_box_score(digits, digits_target):
    scheme = LTRC(n=10, variant="LTRC", steps=5, lr=0.05, seed=1)
    fingerprints = scheme.generate(digits_target, digits.test.images[:4], digits.test.labels[:4])
    assert fingerprints.samples.min() >= 0 and fingerprints.samples.max() <= 1
    assert scheme.verify(WhiteBox(digits_target), fingerprints).matching_score == 1.0
    stored = fingerprints.labels.clone()
    answers = stored.clone()
    answers[:3] = (answers[:3] + 1) % 10  # a suspect that answers 7 of the 10 labels
    labels_only = BlackBox(lambda x: answers[: len(x)], labels_only=True)
    result = scheme.verify(labels_only, fingerprints, mode="black-box")
    assert result.matching_score == pytest.approx(0.7) and result.queries == 10


def test_ltrc_refuses_other_tasks_and_bad_settings(digits_target):
    with pytest.raises(InputError, match="variant"):
        LTRC(variant="X")
    with pytest.raises(InputError, match="cutoff"):
        LTRC(cutoff=2.0)
    with pytest.raises(InputError, match="classifiers"):
        LTRC(n=2).generate(digits_target, torch.rand(2, 3, 32, 32), torch.zeros(2), Regression())


def test_all_schemes_are_those_that_protect_the_task_the_central_one_first():
    assert EvaluationConfig(data="digits", schemes=("all",)).schemes == ("saliency", "conferae", "ipguard", "ltrc", "metav", "tafa")
    assert EvaluationConfig(data="digits", schemes=("all",), task="regression").schemes == ("saliency", "metav", "tafa")
    assert Classification().name in LTRC.tasks
