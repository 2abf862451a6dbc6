"""IPGuard: the boundary loss, the matching rate, the target's own score, query counts, files and labels-only servers."""

from __future__ import annotations

import pytest
import torch

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import CapabilityError, InputError
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint
from modelprint.fingerprints.ipguard import REACHED, IPGuard, boundary_loss
from modelprint.serving.server import ServedModel, ServerThread, TopLabel, create_app
from modelprint.tasks import Classification, Regression

from conftest import TinyCNN

N = 12
SHAPE = (3, 8, 8)


def tiny(seed: int) -> TinyCNN:
    """A tiny tanh CNN with 4 classes, its weights scaled up so that its logits span a few units."""
    torch.manual_seed(seed)
    model = TinyCNN(classes=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    return model


@pytest.fixture(scope="module")
def setting():
    """A target, an independent model, candidates the target labels, and an IPGuard set of the target."""
    target, other = tiny(0), tiny(1)
    images = torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = target(images).argmax(dim=1)
    scheme = IPGuard(n=N, k=0.2, lr=0.1, steps=100, target_class="random", batch_size=5)
    return scheme, target, other, images, labels, scheme.generate(target, images, labels)


def hand_made_set(labels: list[int]) -> FingerprintSet:
    samples = torch.rand(len(labels), *SHAPE, generator=torch.Generator().manual_seed(1))
    return FingerprintSet(
        scheme="ipguard", config=IPGuard(n=len(labels)).settings(), task=Classification().to_config(),
        tensors={"samples": samples, "originals": samples.clone(), "labels": torch.tensor(labels)},
        thresholds={"white_box": 0.5, "black_box": 0.5},
    )


def test_loss_is_zero_exactly_when_the_margin_holds():
    source, target = torch.tensor([0]), torch.tensor([1])
    cases = [  # (logits, k, loss): i = 0, j = 1
        ([2.0, 3.0, 1.0, 0.0], 1.0, 0.0),    # j leads by exactly k, i second
        ([2.0, 2.9, 1.0, 0.0], 1.0, 0.1),    # the margin falls short by 0.1
        ([2.0, 3.5, 2.5, 0.0], 1.0, 0.5),    # the margin holds, but class 2 is above i
        ([2.0, 1.0, 1.5, 0.0], 0.5, 1.5),    # both terms: ReLU(2 - 1 + 0.5) + ReLU(1.5 - 2) = 1.5
        ([2.0, 3.0, 2.0, 0.0], 1.0, 0.0),    # t ties with i: i is still second
    ]
    for logits, k, expected in cases:
        loss = boundary_loss(torch.tensor([logits]), source, target, k)
        assert loss.item() == pytest.approx(expected, abs=1e-6), logits
    # binary: only the margin term
    assert boundary_loss(torch.tensor([[0.0, 1.0]]), source, target, 1.0).item() == 0.0
    assert boundary_loss(torch.tensor([[0.0, 0.5]]), source, target, 1.0).item() == pytest.approx(0.5)
    # random logits: zero exactly when z_j - z_i >= k and z_i is the largest of the other classes
    z = torch.randn(2000, 4, generator=torch.Generator().manual_seed(0)) * 3
    i, j = torch.zeros(2000, dtype=torch.long), torch.ones(2000, dtype=torch.long)
    holds = (z[:, 1] - z[:, 0] >= 0.7) & (z[:, 0] >= z[:, 2:].max(dim=1).values)
    assert 100 < int(holds.sum()) < 1900
    assert torch.equal(boundary_loss(z, i, j, 0.7) == 0, holds)


def test_matching_rate_against_hand_made_labels():
    fingerprints = hand_made_set([0, 1, 2, 3])
    answers = torch.tensor([0, 1, 1, 3])  # rows 0, 1 and 3 match
    scores = BlackBox(lambda x: torch.nn.functional.one_hot(answers[: len(x)], 4).float() * 0.7 + 0.1)
    result = IPGuard().verify(scores, fingerprints)
    assert (result.mode, result.matching_score, result.values, result.queries) == ("black-box", 0.75, [1.0, 1.0, 0.0, 1.0], 4)
    assert result.thresholds == [0.5] * 4
    labels_only = BlackBox(lambda x: torch.tensor([0, 2, 2, 2])[: len(x)], labels_only=True)
    result = IPGuard().verify(labels_only, fingerprints)
    assert (result.matching_score, result.values, result.queries) == (0.5, [1.0, 0.0, 1.0, 0.0], 4)


def test_the_target_scores_one_on_its_own_set(setting):
    scheme, target, other, _, _, fingerprints = setting
    assert len(fingerprints) == N and fingerprints.thresholds == {"white_box": 0.5, "black_box": 0.5}
    stats = fingerprints.stats
    assert stats["reached"] == 1.0 and stats["unreached"] == 0 and stats["label_changed"] == 1.0 and "labels_kept" not in stats
    with torch.no_grad():
        assert torch.equal(target(fingerprints.tensors["originals"]).argmax(dim=1) != fingerprints.labels, torch.ones(N, dtype=torch.bool))
        losses = boundary_loss(target(fingerprints.samples), target(fingerprints.tensors["originals"]).argmax(dim=1), fingerprints.labels, 0.2)
    assert bool((losses <= REACHED).all())  # each stored label is the target class j, leading by k
    white = scheme.verify(WhiteBox(target), fingerprints)
    assert (white.mode, white.matching_score, white.queries) == ("white-box", 1.0, 0)
    box = WhiteBox(target).black_box(Classification())
    black = scheme.verify(box, fingerprints, mode="black-box")
    assert (black.matching_score, black.queries, box.queries) == (1.0, N, N)
    accepted = scheme.verify(WhiteBox(target), fingerprints, mode="black-box")  # a white-box access in black-box mode
    assert (accepted.mode, accepted.matching_score, accepted.queries) == ("black-box", 1.0, N)
    assert scheme.verify(WhiteBox(other), fingerprints).matching_score < 1.0


def test_generation_is_seeded_and_least_likely_targets_the_smallest_logit(setting):
    scheme, target, _, images, labels, fingerprints = setting
    again = scheme.generate(target, images, labels)
    assert torch.equal(again.samples, fingerprints.samples) and torch.equal(again.labels, fingerprints.labels)
    least = IPGuard(n=4, k=0.2, lr=0.1, steps=100).generate(target, images, labels)
    with torch.no_grad():
        smallest = target(least.tensors["originals"]).argmin(dim=1)
    assert least.stats["reached"] == 1.0 and torch.equal(least.labels, smallest)


def test_a_saved_set_verifies_the_same(setting, tmp_path):
    scheme, target, other, _, _, fingerprints = setting
    loaded = FingerprintSet.load(fingerprints.save(tmp_path / "ipguard.safetensors"))
    assert loaded.sha256() == fingerprints.sha256()
    for model in (target, other):
        before, after = scheme.verify(WhiteBox(model), fingerprints), IPGuard().verify(WhiteBox(model), loaded)
        assert (after.matching_score, after.values) == (before.matching_score, before.values)


def test_labels_only_server_gives_the_in_process_score(setting):
    scheme, _, other, _, _, fingerprints = setting
    local = scheme.verify(WhiteBox(other), fingerprints, mode="black-box")
    served = ServedModel("suspect", other, Classification(), SHAPE, [TopLabel()])
    with ServerThread(create_app(served)) as server:
        box = BlackBox.http(server.url, "suspect", batch_size=5)
        assert "labels" in box.capabilities and "scores" not in box.capabilities
        remote = scheme.verify(box, fingerprints)
    assert set(local.values) == {0.0, 1.0}  # matches and mismatches: a wrong read-out would change the score
    assert (remote.mode, remote.matching_score, remote.values) == ("black-box", local.matching_score, local.values)
    assert remote.queries == N and served.inference_count == N


def test_saliency_refuses_the_labels_only_server_before_sending_anything(setting):
    _, target, _, images, labels, _ = setting
    saliency = SaliencyFingerprint(n=2, steps=0).generate(target, images, labels)
    served = ServedModel("suspect", target, Classification(), SHAPE, [TopLabel()])
    with ServerThread(create_app(served)) as server:
        box = BlackBox.http(server.url, "suspect")
        with pytest.raises(CapabilityError, match="needs output scores .* offers .*top-1 labels"):
            SaliencyFingerprint().verify(box, saliency)
    assert served.inference_count == 0 and box.queries == 0


def test_white_box_mode_needs_the_model():
    with pytest.raises(CapabilityError, match="ipguard white-box verification needs white-box access"):
        IPGuard().verify(BlackBox(lambda x: torch.zeros(len(x), 4)), hand_made_set([0, 1]), mode="white-box")


@pytest.mark.parametrize(
    "settings, words",
    [({"k": 0}, "k must be > 0"), ({"lr": -1.0}, "lr must be > 0"), ({"steps": -1}, "steps must be >= 0"),
     ({"target_class": "nearest"}, "target_class must be one of"), ({"n": 1.5}, "setting n must be int"),
     ({"batch_size": 0}, "batch_size must be >= 1"), ({"k": float("nan")}, "finite")],
)
def test_bad_settings_are_refused_in_one_line(settings, words):
    with pytest.raises(InputError, match=words):
        IPGuard(**settings)


def test_bad_inputs_are_refused(setting):
    _, target, _, images, labels, _ = setting
    assert repr(IPGuard(k=2)) == "IPGuard(n=100, k=2.0, lr=0.001, steps=1000, target_class='least_likely', seed=0, batch_size=100)"
    with pytest.raises(InputError, match="reads no helper models"):
        IPGuard(n=2).generate(target, images, labels, references=[target])
    with pytest.raises(InputError, match="protects classifiers"):
        IPGuard(n=2).generate(target, images, labels.float(), Regression())
    with pytest.raises(InputError, match="only 1 candidate images are classified right"):
        IPGuard(n=2).generate(target, images[:1], labels[:1])
    with pytest.raises(InputError, match="cannot be verified by the 'ipguard' scheme"):
        IPGuard().verify(WhiteBox(target), SaliencyFingerprint(n=2, steps=0).generate(target, images, labels))
