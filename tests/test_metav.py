"""MetaV: what the verifier reads per task (hand-checked), the joint step on a toy training zoo, a set that
round-trips and verifies the same every way with N queries, and the rules of the owner's training zoo."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import CapabilityError, InputError, IntegrityError
from modelprint.fingerprints import FingerprintSet, scheme_named
from modelprint.fingerprints.metav.features import feature_count, features
from modelprint.fingerprints.metav.verifier import joint_fit, make_verifier
from modelprint.protocol.training_zoo import check_disjoint, records_sha256, training_records
from modelprint.serving.server import ServedModel, ServerThread, create_app
from modelprint.tasks import Classification, Regression, Similarity
from modelprint.zoo.build import checkpoint_epochs
from modelprint.zoo.spec import PRESETS, TRAINING_THIEVES, paper_zoo, quick_zoo, training_recipe, training_zoo

from conftest import TinyCNN


def test_classification_reads_probabilities_from_logits_or_an_api():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    probs = F.softmax(logits, dim=1)
    got = features(Classification(), logits, torch.tensor([0.0, 1.0]), deployed=False)
    assert torch.allclose(got, probs.reshape(-1)) and got.shape == (feature_count(Classification(), 2, 3),)
    assert torch.equal(features(Classification(), probs, torch.tensor([0.0, 1.0]), deployed=True), probs.reshape(-1))


def test_regression_values_are_standardised_by_the_stored_norm():
    got = features(Regression(), torch.tensor([[30.0], [50.0]]), torch.tensor([40.0, 10.0]), deployed=True)
    assert torch.equal(got, torch.tensor([-1.0, 1.0]))


def test_similarity_reads_the_cosines_of_every_pair_whatever_the_rotation_and_scale_of_the_space():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    got = features(Similarity(), e, torch.tensor([0.0, 1.0]), deployed=True)
    half = 2**-0.5
    assert torch.allclose(got, torch.tensor([0.0, half, half]))  # pairs (0,1), (0,2), (1,2), by hand
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    assert torch.allclose(features(Similarity(), 3 * e @ rotation, torch.tensor([0.0, 1.0]), deployed=True), got, atol=1e-6)
    assert feature_count(Similarity(), 3, 2) == 3


def _noisy(model: nn.Module, scale: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        for p in copy_.parameters():
            p.add_(scale * torch.randn_like(p))
    return copy_.eval()


@pytest.fixture(scope="module")
def toy_zoo():
    """A tanh target, pirated copies (its weights plus small noise) and independent models (other seeds)."""
    torch.manual_seed(0)
    target = TinyCNN().eval()
    positives = [_noisy(target, 0.05, 10 + i) for i in range(3)]
    negatives = []
    for i in range(3):
        torch.manual_seed(100 + i)
        negatives.append(TinyCNN().eval())
    return target, positives, negatives


def _loss(verifier, models, kinds, inputs):
    read = torch.stack([features(Classification(), m(inputs), torch.tensor([0.0, 1.0]), deployed=False) for m in models])
    return float(F.binary_cross_entropy_with_logits(verifier(read).squeeze(1), torch.tensor(kinds)))


def test_the_joint_steps_lower_the_verifier_loss_on_a_toy_training_zoo(toy_zoo):
    target, positives, negatives = toy_zoo
    torch.manual_seed(0)
    inputs = torch.rand(6, 3, 8, 8)
    verifier = make_verifier(6 * 3, 16)
    models, kinds = [target, *positives, *negatives], [1.0] * 4 + [0.0] * 3
    with torch.no_grad():
        before = _loss(verifier, models, kinds, inputs)
    start = inputs.clone()
    learnt, losses = joint_fit(inputs, [target, *positives], negatives, lambda m, x: features(Classification(), m(x), torch.tensor([0.0, 1.0]), deployed=False),
                               verifier, steps=60, models_per_step=4, lr_inputs=0.05, lr_verifier=0.01, weight_decay=0.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = _loss(verifier, models, kinds, learnt)
    assert after < before / 2, (before, after)
    assert torch.equal(inputs, start) and not torch.equal(learnt, start)  # the inputs moved; the caller's did not
    assert 0 <= learnt.min() and learnt.max() <= 1
    assert all(p.requires_grad for p in target.parameters())  # the models' flags are restored
    assert len(losses) == 60


@pytest.fixture(scope="module")
def made(toy_zoo):
    target, positives, negatives = toy_zoo
    scheme = scheme_named("metav", n=6, steps=80, hidden=16, models_per_step=4, lr_inputs=0.05, lr_verifier=0.01)
    images = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return scheme, scheme.generate(target, images, torch.zeros(20, dtype=torch.long), surrogates=positives, references=negatives)


def test_a_set_round_trips_and_verifies_the_same_every_way_with_n_queries(made, toy_zoo, tmp_path):
    scheme, fingerprints = made
    target, positives, negatives = toy_zoo
    fingerprints.save(tmp_path / "metav.safetensors")
    loaded = FingerprintSet.load(tmp_path / "metav.safetensors")
    assert loaded.sha256() == fingerprints.sha256()
    for model in (target, positives[0], negatives[0]):
        white = scheme.verify(WhiteBox(model), loaded, mode="white-box")
        box = BlackBox(lambda x, m=model: F.softmax(m(x), dim=1).detach())
        black = scheme.verify(box, loaded, mode="black-box")
        assert black.queries == 6 == box.queries and white.queries == 0
        assert black.matching_score == pytest.approx(white.matching_score, abs=1e-5)
        assert white.matching_score == scheme.verify(WhiteBox(model), fingerprints, mode="white-box").matching_score
    assert len(fingerprints.config["surrogate_sha256"]) == 3 and len(fingerprints.config["reference_sha256"]) == 3
    assert fingerprints.stats["training_p_positive_min"] > 0.5 > fingerprints.stats["training_p_negative_max"]


def test_a_served_suspect_verifies_as_in_process_with_n_queries(made, toy_zoo):
    scheme, fingerprints = made
    _, positives, negatives = toy_zoo
    for model in (positives[0], negatives[0]):
        served = ServedModel("suspect", model, Classification(), (3, 8, 8), [])
        with ServerThread(create_app(served)) as server:
            remote = scheme.verify(BlackBox.http(server.url, "suspect", batch_size=4), fingerprints)
        local = scheme.verify(WhiteBox(model), fingerprints, mode="black-box")
        assert remote.mode == "black-box" and remote.queries == 6 == served.inference_count
        assert remote.matching_score == pytest.approx(local.matching_score, abs=1e-5)


def test_labels_only_is_refused_before_anything_is_sent(made):
    scheme, fingerprints = made
    sent = []
    box = BlackBox(lambda x: sent.append(len(x)) or torch.zeros(len(x)), labels_only=True)
    with pytest.raises(CapabilityError):
        scheme.verify(box, fingerprints, mode="black-box")
    assert sent == []


def test_a_set_whose_verifier_reads_another_feature_count_is_refused(made, tmp_path):
    _, fingerprints = made
    tensors = {**fingerprints.tensors, "verifier.0.weight": torch.zeros(16, 17)}
    odd = FingerprintSet(**{**fingerprints.__dict__, "tensors": tensors})
    with pytest.raises(IntegrityError, match="reads 17 features"):
        type(made[0]).validate(odd)


def test_missing_training_models_are_refused(toy_zoo):
    target, positives, _ = toy_zoo
    with pytest.raises(InputError, match="no independent"):
        scheme_named("metav", n=6).generate(target, torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long), surrogates=positives)


def test_checkpoint_epochs_are_evenly_spaced_and_never_the_last():
    assert checkpoint_epochs(15, 2) == [5, 10]
    assert checkpoint_epochs(3, 2) == [1, 2]
    assert checkpoint_epochs(2, 2) == [1]
    assert checkpoint_epochs(1, 2) == []


def test_the_training_zoo_is_disjoint_from_the_presets_and_nested_by_size():
    big, small = training_zoo(40, train_epochs=15), training_zoo(10, train_epochs=15)
    for preset in (paper_zoo(train_epochs=15), quick_zoo(train_epochs=15)):
        check_disjoint(big.to_dict(), preset)
    assert all(s in big.suspects for s in small.suspects)
    assert {s.transform for s in training_zoo(20, train_epochs=15).positives} == {"finetune", "retrain", "weight_prune", "filter_prune", "distill", "extract"}
    assert len(big.positives) == len(big.negatives) == 20


def test_the_training_zoo_draws_every_thief_recipe_seeded_and_disjoint_from_every_evaluation_zoo():
    size = 4 * len(TRAINING_THIEVES)  # every second positive is a thief: every recipe once
    zoo = training_zoo(size, train_epochs=10, arch="vgg11_bn")
    thieves = [s for s in zoo.positives if s.transform in ("distill", "extract")]
    assert [training_recipe(s.name) for s in thieves] == [name for name, _, _ in TRAINING_THIEVES]
    assert [s.seed for s in zoo.suspects] == [s.seed for s in training_zoo(size, train_epochs=10, arch="vgg11_bn").suspects]  # seeded
    by_recipe = {training_recipe(s.name): s.params for s in thieves}
    assert by_recipe["distill_other_arch"]["arch"] == by_recipe["extract_other_arch"]["arch"] == "resnet18"  # the target's other
    assert by_recipe["distill_half_epochs"]["epochs"] == 5 and by_recipe["distill_t1"]["epochs"] == 10
    resnet = {training_recipe(s.name): s.params for s in training_zoo(size, train_epochs=10).positives}
    assert resnet["distill_other_arch"]["arch"] == "vgg11_bn"  # a ResNet target's other
    for preset in PRESETS.values():
        check_disjoint(zoo.to_dict(), preset(train_epochs=10, arch="vgg11_bn", data="cifar10"))
    assert training_recipe("negative_0") == training_recipe("positive_x_distill") == "" and training_recipe("positive_12_weight_prune") == "weight_prune"


def test_a_training_zoo_sharing_a_seed_or_a_model_with_the_evaluation_zoo_is_refused():
    training = training_zoo(4, train_epochs=2).to_dict()
    clash = quick_zoo(train_epochs=2).to_dict()
    clash["suspects"][0]["seed"] = training["suspects"][0]["seed"]
    with pytest.raises(InputError, match="shares seeds"):
        check_disjoint(training, clash)
    records = [{**s, "sha256": f"w{i}"} for i, s in enumerate(training["suspects"])]
    copied = {"suspects": [{**s.to_dict(), "sha256": "w1"} for s in quick_zoo(train_epochs=2).suspects]}
    with pytest.raises(InputError, match="shares models"):
        check_disjoint({"suspects": records}, copied)


def test_training_records_take_the_first_of_each_kind_and_their_checkpoints():
    manifest = {"suspects": [
        {"name": "positive_0", "kind": "positive", "sha256": "a", "checkpoints": [{"epoch": 1, "sha256": "a1", "path": "p"}]},
        {"name": "positive_1", "kind": "positive", "sha256": "b"},
        {"name": "negative_0", "kind": "negative", "sha256": "c", "checkpoints": [{"epoch": 5, "sha256": "c5", "path": "q"}]},
        {"name": "negative_1", "kind": "negative", "sha256": "d"},
    ]}
    positives, negatives = training_records(manifest, 2, checkpoints=False)
    assert [r["name"] for r in positives + negatives] == ["positive_0", "negative_0"]
    positives, negatives = training_records(manifest, 2, checkpoints=True)
    assert [r["name"] for r in positives + negatives] == ["positive_0", "positive_0@e1", "negative_0", "negative_0@e5"]
    assert records_sha256(positives) != records_sha256(positives[:1])
    with pytest.raises(InputError, match="--size 6"):
        training_records(manifest, 6, checkpoints=False)


def test_leave_one_recipe_out_passes_over_the_recipe_and_takes_the_next_positives():
    spec = training_zoo(12, train_epochs=2)  # positives: finetune, distill, weight_prune, extract, filter_prune, distill_t1
    manifest = {"suspects": [{**s.to_dict(), "sha256": s.name} for s in spec.suspects]}
    positives, _ = training_records(manifest, 6, checkpoints=False)
    assert [r["name"] for r in positives] == ["positive_0_finetune", "positive_1_distill", "positive_2_weight_prune"]
    positives, _ = training_records(manifest, 6, checkpoints=False, leave_out=("distill",))
    assert [r["name"] for r in positives] == ["positive_0_finetune", "positive_2_weight_prune", "positive_3_extract"]
    assert all(training_recipe(r["name"]) != "distill" for r in positives)
    with pytest.raises(InputError, match="without recipes distill, extract"):
        training_records(manifest, 12, checkpoints=False, leave_out=("distill", "extract"))


@pytest.mark.parametrize("task", ["regression", "similarity"])
def test_zoos_for_a_task_hold_only_suspects_that_can_be_made_from_its_models(task):
    zoo = training_zoo(40, train_epochs=2, task=task)
    assert len(zoo.positives) == 20 and all(s.supports(task) for s in zoo.suspects)
    assert {training_recipe(s.name) for s in zoo.positives} & {"extract", "distill_hard", "distill_top3", "extract_hard"} == set()
    for preset in PRESETS.values():
        spec = preset(train_epochs=2, data="cifar10")
        kept = spec.for_task(task, drop=True)
        dropped = {s.name for s in spec.suspects} - {s.name for s in kept.suspects}
        # the API thief of a classifier, and students of its top-1 or top-k labels: nothing else
        assert "extract_0" in dropped and dropped == {s.name for s in spec.suspects if s.transform == "extract" or s.params.get("labels") in ("hard", "top_k")}
        assert len(kept.negatives) == len(spec.negatives)
        if dropped:
            with pytest.raises(InputError, match=f"cannot be made from a {task} model"):
                spec.for_task(task, drop=False)
    assert training_zoo(40, train_epochs=2, task="classification").suspects == training_zoo(40, train_epochs=2).suspects
