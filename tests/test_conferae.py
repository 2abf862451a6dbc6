"""ConferAE: the conferrable ensemble on hand-made outputs, the agreement score on hand-made labels, the helper-model
rules, and a set generated on a small digits target: within eps, labels moved, verified the same every way."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import CapabilityError, InputError
from modelprint.fingerprints import FingerprintSet, scheme_named
from modelprint.fingerprints.conferae import ConferAE, conferrable_ensemble
from modelprint.tasks import Classification
from modelprint.zoo import Distill, Independent


class Fixed(nn.Module):
    """Answers the same class probabilities (as logits whose softmax they are) for every image."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(probs).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


class Counting(nn.Module):
    """A model that counts its forward passes (to show that nothing ran)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


SURROGATES = ([0.7, 0.2, 0.1], [0.5, 0.3, 0.2])
REFERENCES = ([0.6, 0.3, 0.1], [0.2, 0.2, 0.6])


def test_ensemble_is_the_surrogates_mean_times_one_minus_the_references_mean():
    x = torch.zeros(2, 3, 4, 4)
    got = conferrable_ensemble(x, [Fixed(p) for p in SURROGATES], [Fixed(p) for p in REFERENCES])
    # by hand: mean_S = [0.6, 0.25, 0.15], mean_R = [0.4, 0.25, 0.35]
    expected = torch.tensor([0.6 * 0.6, 0.25 * 0.75, 0.15 * 0.65])
    assert torch.allclose(got, expected.expand(2, -1), atol=1e-6)


def test_dropped_members_leave_at_least_one_per_group():
    x = torch.zeros(1, 3, 4, 4)
    surrogates, references = [Fixed(p) for p in SURROGATES], [Fixed(p) for p in REFERENCES]
    singles = {(s, r): torch.tensor(SURROGATES[s]) * (1 - torch.tensor(REFERENCES[r])) for s in range(2) for r in range(2)}
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):  # keep_p ~ 0: every draw keeps exactly one member per group
        got = conferrable_ensemble(x, surrogates, references, keep_p=1e-9, generator=generator)[0]
        match = [key for key, value in singles.items() if torch.allclose(got, value, atol=1e-6)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 4  # each member is drawn sometimes


def _hand_made_set(labels: list[int]) -> FingerprintSet:
    n = len(labels)
    samples = torch.arange(n).float().div(10).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()  # image i holds i/10
    return FingerprintSet(
        scheme="conferae",
        config=ConferAE(n=n).settings(),
        task=Classification().to_config(),
        tensors={
            "samples": samples, "originals": samples.clone(), "labels": torch.tensor(labels),
            "original_labels": torch.zeros(n, dtype=torch.int64), "conferrability": torch.full((n,), 0.9),
        },
        thresholds={"white_box": 0.5, "black_box": 0.5},
    )


def test_agreement_with_hand_made_labels_through_scores_and_labels_only():
    fingerprints = _hand_made_set([0, 1, 2, 1, 0])
    answers = torch.tensor([0, 1, 0, 1, 2])  # agrees on samples 0, 1 and 3

    def answer(images: torch.Tensor) -> torch.Tensor:
        return answers[(images[:, 0, 0, 0] * 10).round().long()]

    scores = BlackBox(lambda x: torch.nn.functional.one_hot(answer(x), 3).float())
    labels_only = BlackBox(answer, labels_only=True)
    for box in (scores, labels_only):
        result = ConferAE().verify(box, fingerprints)
        assert result.mode == "black-box" and result.values == [1.0, 1.0, 0.0, 1.0, 0.0]
        assert result.thresholds == [0.5] * 5 and result.matching_score == pytest.approx(0.6)
        assert result.queries == box.queries == 5
    with pytest.raises(CapabilityError):
        ConferAE().verify(labels_only, fingerprints, mode="white-box")


def test_settings_are_checked():
    for bad in ({"tau": 1.2}, {"keep_p": 0.0}, {"eps": 0.0}, {"optimiser": "sgd"}, {"n": "3"}, {"b": -1.0}, {"min_fraction": 0.0}):
        with pytest.raises(InputError):
            ConferAE(**bad)
    assert ConferAE(eps=1) == ConferAE(eps=1.0) and repr(ConferAE(eps=1)) == repr(ConferAE(eps=1.0))
    assert scheme_named("conferae") == ConferAE()
    assert ConferAE.owner_models["default"] == {"references": 8, "surrogates": 4}


def test_missing_or_unused_helpers_are_refused_before_any_work(digits_target, digits):
    counting = Counting(digits_target)
    one = [digits_target]
    images, labels = digits.train.images[:20], digits.train.labels[:20]
    for helpers, named in (({"surrogates": one}, "references"), ({"references": one}, "surrogates"), ({}, "references and surrogates")):
        with pytest.raises(InputError, match=named):
            ConferAE(n=2).generate(counting, images, labels, **helpers)
    with pytest.raises(InputError, match="calibration"):
        ConferAE(n=2).generate(counting, images, labels, references=one, surrogates=one, calibration=one)
    assert counting.calls == 0
    with pytest.raises(InputError, match="surrogates"):
        ConferAE().check_helpers(references=8, surrogates=0)


@pytest.fixture(scope="module")
def helpers(digits, digits_target):
    """One tiny independent reference and one tiny distilled surrogate (1 epoch on 400 images)."""
    small = digits.train.subset(range(400))
    reference = Independent(epochs=2, augment="").apply(digits_target, small, seed=5000)
    surrogate = Distill(epochs=2, augment="").apply(digits_target, small, seed=6000)
    return reference, surrogate


@pytest.fixture(scope="module")
def made(digits, digits_target, helpers):
    reference, surrogate = helpers
    scheme = ConferAE(n=6, eps=0.1, steps=15, tau=0.3, candidates=4.0, batch_size=24, seed=1)
    fingerprints = scheme.generate(digits_target, digits.train.images[:200], digits.train.labels[:200], references=[reference], surrogates=[surrogate])
    return scheme, fingerprints


@pytest.mark.slow(30)  # the module's helper models and set
def test_generated_samples_moved_the_label_within_eps(made, digits_target):
    scheme, fingerprints = made
    samples, originals = fingerprints.samples, fingerprints.tensors["originals"]
    assert 3 <= len(fingerprints) <= 6 and fingerprints.stats["kept"] == len(fingerprints)
    assert float((samples - originals).abs().max()) <= scheme.eps + 1e-6
    assert samples.min() >= 0 and samples.max() <= 1
    with torch.no_grad():
        assert digits_target(samples).argmax(dim=1).equal(fingerprints.labels)
        assert digits_target(originals).argmax(dim=1).equal(fingerprints.tensors["original_labels"])
    assert not fingerprints.labels.eq(fingerprints.tensors["original_labels"]).any()
    assert bool((fingerprints.tensors["conferrability"] >= scheme.tau).all())
    assert fingerprints.config["reference_sha256"] and fingerprints.config["surrogate_sha256"]
    assert "labels_kept" not in fingerprints.stats and fingerprints.stats["generation_s"] > 0


def test_the_target_scores_one_the_same_in_every_mode_with_n_queries(made, digits_target):
    scheme, fingerprints = made
    n = len(fingerprints)
    white = scheme.verify(WhiteBox(digits_target), fingerprints)
    assert white.mode == "white-box" and white.matching_score == 1.0 and white.queries == 0
    box = WhiteBox(digits_target).black_box(Classification(), budget=n)  # no more than N queries allowed
    black = scheme.verify(box, fingerprints)
    assert black.matching_score == 1.0 and black.queries == box.queries == n
    labels_only = BlackBox(lambda x: digits_target(x).argmax(dim=1), labels_only=True, budget=n)
    assert scheme.verify(labels_only, fingerprints).matching_score == 1.0 and labels_only.queries == n


def test_a_saved_set_loads_and_verifies_the_same(made, helpers, tmp_path):
    scheme, fingerprints = made
    loaded = FingerprintSet.load(fingerprints.save(tmp_path / "conferae.safetensors"))
    assert loaded.sha256() == fingerprints.sha256()
    for model in helpers:
        before = scheme.verify(WhiteBox(model), fingerprints)
        after = scheme.verify(WhiteBox(model), loaded)
        assert after.values == before.values and after.matching_score == before.matching_score
    tampered = FingerprintSet(**{**loaded.__dict__, "tensors": {**loaded.tensors, "conferrability": loaded.tensors["conferrability"] + 2}})
    from modelprint.errors import IntegrityError

    with pytest.raises(IntegrityError, match="conferrability"):
        ConferAE.validate(tampered)


def test_labels_only_server_gives_the_in_process_score(made, helpers):
    """Through `serve --labels-only` (top-1 labels on the wire) the scores and values of the independent reference
    and the distilled surrogate are those of the models in process, with N queries each."""
    from modelprint.serving.server import ServedModel, ServerThread, TopLabel, create_app

    scheme, fingerprints = made
    seen = set()
    for suspect in helpers:
        local = scheme.verify(WhiteBox(suspect), fingerprints)
        served = ServedModel("suspect", suspect, Classification(), tuple(fingerprints.samples.shape[1:]), [TopLabel()])
        with ServerThread(create_app(served)) as server:
            box = BlackBox.http(server.url, "suspect", batch_size=4)
            assert "labels" in box.capabilities and "scores" not in box.capabilities
            remote = scheme.verify(box, fingerprints)
        assert (remote.matching_score, remote.values) == (local.matching_score, local.values)
        assert remote.queries == len(fingerprints) == served.inference_count
        seen |= set(local.values)
    assert seen == {0.0, 1.0}  # agreements and disagreements: a wrong read-out would change a score
