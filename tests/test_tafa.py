"""TAFA: the midpoint residual on a hand-built ReLU network, the pairs' bends, both modes and labels-only refusal."""

from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import CapabilityError, IntegrityError
from modelprint.fingerprints import TAFA, FingerprintSet
from modelprint.fingerprints.tafa import affine_outputs, bend, midpoint_residual
from modelprint.tasks import Classification, Regression

from conftest import TinyCNN


class Hinge(nn.Module):
    """y = ReLU(a - 0.5) + 0.3 b for a 1 x 1 x 2 image (a, b): two linear regions, the boundary at a = 0.5."""

    def forward(self, x):
        a, b = x[:, 0, 0, 0], x[:, 0, 0, 1]
        return (torch.relu(a - 0.5) + 0.3 * b)[:, None]


def _image(a: float, b: float) -> torch.Tensor:
    return torch.tensor([[[[a, b]]]], dtype=torch.float64)


def test_midpoint_is_exactly_affine_inside_one_region_and_not_across_a_boundary():
    model = Hinge()
    inside = [model(_image(0.1, 0.2)), model(_image(0.3, 0.6)), model(_image(0.2, 0.4))]
    assert midpoint_residual(*inside).item() == 0.0
    inside_right = [model(_image(0.6, 0.2)), model(_image(0.9, 0.8)), model(_image(0.75, 0.5))]
    assert midpoint_residual(*inside_right).item() == pytest.approx(0.0, abs=1e-15)
    # (0.2, 0.2) -> 0.06, (0.8, 0.2) -> 0.36, midpoint (0.5, 0.2) -> 0.06: |0.06 - 0.21| / 0.30 = 0.5
    across = [model(_image(0.2, 0.2)), model(_image(0.8, 0.2)), model(_image(0.5, 0.2))]
    assert midpoint_residual(*across).item() == pytest.approx(0.5, abs=1e-12)
    assert bend(*across).item() == pytest.approx(-0.5, abs=1e-12)  # the outputs sag below the chord


def test_probabilities_are_read_as_the_centred_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], dtype=torch.float64)
    from_api = affine_outputs(Classification(), logits.softmax(dim=1), deployed=True)
    from_model = affine_outputs(Classification(), logits, deployed=False)
    assert torch.allclose(from_api, logits - logits.mean(dim=1, keepdim=True), atol=1e-12)
    assert torch.allclose(from_model, from_api, atol=1e-12)


def _relu_cnn(seed: int) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(activation=nn.ReLU).eval()


def test_pairs_bend_as_set_and_the_target_matches_itself_in_both_modes():
    target = _relu_cnn(0)
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    scheme = TAFA(n=12, bend=0.05, seed=0)
    fingerprints = scheme.generate(target, images, torch.zeros(8, dtype=torch.long), Classification())
    # x' is where the target's outputs bend by `bend`, or the edge of [0, 1] when they never do.
    lengths = fingerprints.tensors["bends"].norm(dim=1)
    partners = fingerprints.tensors["partners"]
    at_edge = ((partners <= 1e-6) | (partners >= 1 - 1e-6)).flatten(1).any(dim=1)
    assert bool((((lengths - 0.05).abs() < 0.01) | at_edge).all())
    assert (lengths > 0).any()

    white = scheme.verify(WhiteBox(target), fingerprints, mode="white-box")
    box = BlackBox.from_model(target, Classification())
    black = scheme.verify(box, fingerprints, mode="black-box")
    assert white.matching_score == 1.0 and white.queries == 0
    assert black.matching_score == 1.0 and black.queries == 3 * 12
    assert white.values == [0.0] * 12  # the set stores what the target's float32 outputs give
    # An API's float32 probabilities lose a little of the logits: far less than a threshold.
    assert (torch.tensor(black.values) < torch.tensor(black.thresholds) / 10).all()
    assert white.thresholds == pytest.approx((lengths / 2).tolist())


def test_an_independent_network_bends_another_way():
    target, other = _relu_cnn(0), _relu_cnn(7)
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    scheme = TAFA(n=20, bend=0.05, seed=0)
    fingerprints = scheme.generate(target, images, torch.zeros(8, dtype=torch.long), Classification())
    assert scheme.verify(WhiteBox(other), fingerprints, mode="white-box").matching_score <= 0.5


def test_regression_reads_values_and_labels_only_is_refused_before_sending():
    torch.manual_seed(0)
    target = TinyCNN(classes=1, activation=nn.ReLU).eval()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    scheme = TAFA(n=4, bend=0.05, seed=0, start="images")
    fingerprints = scheme.generate(target, images, torch.zeros(4), Regression())
    assert fingerprints.labels.dtype == torch.float32 and fingerprints.tensors["bends"].shape == (4, 1)
    assert scheme.verify(WhiteBox(target), fingerprints).matching_score == 1.0
    sent = []
    labels_only = BlackBox(lambda x: sent.append(len(x)) or torch.zeros(len(x)), labels_only=True)
    with pytest.raises(CapabilityError, match="scores"):
        scheme.verify(labels_only, fingerprints, mode="black-box")
    assert sent == []


def test_a_set_with_odd_pairs_is_refused_in_one_line(tmp_path):
    target = _relu_cnn(0)
    fingerprints = TAFA(n=3, bend=0.05).generate(target, torch.rand(3, 3, 8, 8), torch.zeros(3, dtype=torch.long))
    fingerprints.save(tmp_path / "set.safetensors")
    loaded = FingerprintSet.load(tmp_path / "set.safetensors")
    assert torch.equal(loaded.tensors["bends"], fingerprints.tensors["bends"])
    for key, value, word in (("partners", lambda t: t + 2, "partners"), ("bends", lambda t: t * float("nan"), "bends"),
                             ("t_black_box", lambda t: -t - 1, "t_black_box"), ("bends", lambda t: t[:2], "bends")):
        odd = replace(loaded, tensors={**loaded.tensors, key: value(loaded.tensors[key])})
        with pytest.raises(IntegrityError, match=word):
            TAFA.validate(odd)
