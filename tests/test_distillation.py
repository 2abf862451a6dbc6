"""The distillation family: what each student learns from (hand-checked losses), every recipe seeded, built and
resumed like any suspect with its recipe in the manifest, and the presets that add it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modelprint.errors import InputError
from modelprint.models import build_model, load_model, save_model
from modelprint.zoo.build import build_zoo
from modelprint.zoo.distill import label_loss
from modelprint.zoo.spec import FAMILY_SEED, PRESETS, ZooSpec, distillation_family, paper_zoo

from conftest import write_npz_folder


def test_the_students_losses_are_the_hand_computed_ones():
    teacher = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    student = torch.tensor([[0.5, 0.0, 1.0, 0.0]])
    log_q = F.log_softmax(student, dim=1)[0]
    assert float(label_loss("hard", 4.0, 3)(student, teacher)) == pytest.approx(-float(log_q[0]))  # top-1 label 0
    p = torch.softmax(teacher / 2.0, dim=1)[0]
    kept = p[:2] / p[:2].sum()  # top-2 of the teacher, renormalised; the rest unknown
    log_q2 = F.log_softmax(student / 2.0, dim=1)[0]
    expected = -float(kept[0] * log_q2[0] + kept[1] * log_q2[1]) * 4.0
    assert float(label_loss("top_k", 2.0, 2)(student, teacher)) == pytest.approx(expected, rel=1e-6)
    # top-k with k = all classes is the soft cross-entropy: Hinton's KL plus the teacher's entropy (times T^2)
    soft = float(label_loss("soft", 2.0, 4)(student, teacher))
    entropy = -float((p * p.log()).sum()) * 4.0
    assert float(label_loss("top_k", 2.0, 4)(student, teacher)) == pytest.approx(soft + entropy, rel=1e-6)


def test_the_family_changes_one_setting_each_from_seeds_no_other_suspect_uses():
    family = distillation_family(train_epochs=5, arch="resnet18", data="../shared/data/cifar10_test_32")
    assert [s.seed for s in family] == [*range(FAMILY_SEED, FAMILY_SEED + 7), *range(FAMILY_SEED + 10, FAMILY_SEED + 13)]
    assert [s.params for s in family][3] == {"epochs": 5, "labels": "top_k", "top_k": 3}
    assert family[5].params["arch"] == "vgg11_bn" and distillation_family(train_epochs=5, arch="vgg11_bn")[5].params["arch"] == "resnet18"
    assert [(s.transform, s.params) for s in family[7:]] == [("extract", {"epochs": 5, "labels": "hard"}), ("extract", {"epochs": 5, "budget": 1000}),
                                                           ("extract", {"epochs": 5, "arch": "vgg11_bn"})]
    digits = distillation_family(train_epochs=5, data="digits")  # digits gets no digits transfer set, the thieves the same seeds
    assert len(digits) == 9 and [s.seed for s in digits[6:]] == [s.seed for s in family[7:]]
    zoo = PRESETS["paper-distill"](train_epochs=5, arch="resnet18", data="x")
    paper_seeds = {s.seed for s in paper_zoo(train_epochs=5).suspects}
    assert len(zoo.positives) == 31 and len(zoo.negatives) == 20 and not paper_seeds & {s.seed for s in family}


def test_every_recipe_is_seeded_built_resumed_and_recorded(tmp_path):
    data = write_npz_folder(tmp_path / "data", n=24, size=16, classes=3)
    torch.manual_seed(0)
    target = build_model("resnet18", num_outputs=3, width=2, input_size=(16, 16))
    target.spec.info["data"] = str(data)
    path = save_model(target, tmp_path / "target.safetensors")
    family = distillation_family(train_epochs=1, arch="resnet18", data=str(data))
    spec = ZooSpec((*[s.__class__(s.name, s.kind, s.transform, {**s.params, **({"width": 4} if "arch" in s.params else {})}, s.seed) for s in family],))
    manifest = build_zoo(spec, path, str(data), tmp_path / "zoo", executor="inprocess", progress=False)
    records = {r["name"]: r for r in manifest["suspects"]}
    assert set(records) == {s.name for s in family} and not any(r["reused"] for r in records.values())
    for s in spec.suspects:  # the recipe, in the manifest and in the model file
        assert s.params.items() <= records[s.name]["params"].items() and records[s.name]["seed"] == s.seed  # every setting, resolved
        assert load_model(records[s.name]["path"]).spec.info["recipe"]["suspect"]["params"] == s.params
    other = load_model(records["distill_other_arch"]["path"])
    assert other.spec.arch == "vgg11_bn" and other.spec.num_outputs == 3 and other(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    again = build_zoo(spec, path, str(data), tmp_path / "zoo", executor="inprocess", progress=False)
    assert all(r["reused"] for r in again["suspects"])  # resumed: nothing rebuilt
    twice = build_zoo(spec, path, str(data), tmp_path / "zoo_again", executor="inprocess", progress=False)
    assert [r["sha256"] for r in twice["suspects"]] == [r["sha256"] for r in manifest["suspects"]]  # seeded: the same weights


def test_bad_recipes_are_refused_when_the_spec_is_read():
    from modelprint.zoo.spec import SuspectSpec

    for params, message in (({"labels": "logits"}, "labels must be"), ({"optimizer": "lbfgs"}, "optimizer must be"), ({"top_k": 0}, "top_k")):
        with pytest.raises(InputError, match=message):
            SuspectSpec("bad", "positive", "distill", params, 1)


def test_the_transfer_student_distils_on_the_data_set_named_and_only_another_one(tmp_path, monkeypatch):
    from modelprint.data import same_recipe
    from modelprint.protocol import EvaluationConfig

    faces, other = write_npz_folder(tmp_path / "faces"), write_npz_folder(tmp_path / "other")
    monkeypatch.chdir(tmp_path)
    family = distillation_family(train_epochs=5, data="digits", transfer="faces")
    assert len(family) == 10 and family[6].params == {"epochs": 5, "transfer": "faces"} and family[6].seed == FAMILY_SEED + 6
    with pytest.raises(InputError, match="another data set than the target's"):
        distillation_family(train_epochs=5, data="faces", transfer=str(faces))  # one folder by two names
    recipe = {"suspect": {"name": "distill_transfer", "params": {"transfer": "faces"}}, "data": "digits"}
    assert same_recipe(recipe, {**recipe, "suspect": {**recipe["suspect"], "params": {"transfer": str(faces)}}})  # reused by any path
    assert not same_recipe(recipe, {**recipe, "suspect": {**recipe["suspect"], "params": {"transfer": str(other)}}})
    config = EvaluationConfig(data="digits", preset="paper-distill", transfer="faces")
    assert next(s for s in config.zoo_spec().positives if s.name == "distill_transfer").params["transfer"] == "faces" and config.to_dict()["transfer"] == "faces"
    for preset, transfer, message in (("paper", "faces", "paper-distill or quick-distill preset"), ("quick-distill", "nowhere", "no such data folder"),
                                      ("quick-distill", "digits", "another data set")):
        with pytest.raises(InputError, match=message):
            EvaluationConfig(data="digits", preset=preset, transfer=transfer)
