"""Regression and face similarity through the whole protocol: the ArcFace loss, the verification metrics and pairs
checked by hand, then a tiny end-to-end evaluation of each task from the command line."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelprint.data import ImageDataset, same_label_pairs
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint
from modelprint.metrics import pair_scores, tar_at_far, verification_accuracy
from modelprint.models import build_model, save_model
from modelprint.tasks import Regression
from modelprint.losses import ArcFace

from conftest import run_cli, write_npz_folder


def test_arcface_loss_by_hand():
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    embedding = torch.tensor([[3.0, 4.0]])  # cos to identity 0: 0.6, to identity 1: 0.8
    loss = ArcFace(weights, scale=2.0, margin=0.5)(embedding, torch.tensor([0]))
    true_logit = 2.0 * math.cos(math.acos(0.6) + 0.5)
    expected = -true_logit + math.log(math.exp(true_logit) + math.exp(2.0 * 0.8))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # Past theta = pi - m the margin logit keeps falling (cos(theta) - m sin(m)) instead of rising again.
    away = ArcFace(weights, scale=1.0, margin=0.5)
    cos = -0.99
    logit = cos - math.sin(math.pi - 0.5) * 0.5
    assert away(torch.tensor([[cos, math.sqrt(1 - cos**2)]]), torch.tensor([0])).item() == pytest.approx(
        -logit + math.log(math.exp(logit) + math.exp(math.sqrt(1 - cos**2))), abs=1e-5
    )


class Flatten(torch.nn.Module):
    """An "embedding network" whose embedding is the image itself (with one parameter: imprinting reads its device)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x.flatten(1)


def test_imprinted_identity_weights_are_mean_normalised_embeddings():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5]]).view(3, 2, 1, 1)
    head = ArcFace.imprinted(Flatten(), ImageDataset(images, torch.tensor([0, 0, 1])))
    expected = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=1)
    assert torch.allclose(F.normalize(head.weight, dim=1), expected, atol=1e-4)


def test_verification_metrics_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    scores, same = pair_scores(embeddings, labels)
    assert len(scores) == 10 and same.sum() == 2
    assert scores[0] == pytest.approx(1 / math.sqrt(1.01), abs=1e-6)  # pair (0, 1)
    # Both genuine pairs (0.995) lie above every impostor pair (at most 0.0995...): TAR 1 at any FAR.
    assert tar_at_far(scores, same, 0.0) == 1.0
    flipped = scores.copy()
    flipped[same] = -1.0  # genuine pairs below every impostor pair
    assert tar_at_far(flipped, same, 0.0) == 0.0
    rng = np.random.default_rng(0)
    separable = np.concatenate([rng.uniform(0.6, 1.0, 40), rng.uniform(-1.0, 0.4, 200)])
    is_same = np.arange(240) < 40
    assert verification_accuracy(separable, is_same) == 1.0
    assert 0.3 < verification_accuracy(rng.uniform(-1, 1, 240), is_same) < 0.7  # random scores: chance


def test_same_label_pairs_pair_distinct_images_of_one_identity():
    images = torch.rand(7, 3, 4, 4)
    data = ImageDataset(images, torch.tensor([0, 1, 0, 2, 1, 1, 3]))
    kept, partners = same_label_pairs(data, seed=3)
    assert kept.labels.tolist() == [0, 1, 0, 1, 1]  # identities 2 and 3 have one image each
    for image, label, partner in zip(kept.images, kept.labels, partners):
        match = [i for i in range(7) if torch.equal(images[i], partner)]
        assert len(match) == 1 and data.labels[match[0]] == label and not torch.equal(image, partner)


def test_regression_tolerance_is_half_the_derived_t_bb_and_holds(digits):
    torch.manual_seed(0)
    model = build_model("vgg11_bn", num_outputs=1, width=4, task="regression", output_shift=4.5, output_scale=3.0).eval()
    values = digits.train.labels[:80].float()
    scheme = SaliencyFingerprint(n=6, steps=4, seed=0)
    fingerprints = scheme.generate(model, digits.train.images[:80], values, Regression())
    tolerance = fingerprints.config["tolerance"]
    assert tolerance == pytest.approx(fingerprints.thresholds["black_box"] / 2)
    with torch.no_grad():
        change = (model(fingerprints.samples) - model(fingerprints.tensors["originals"])).abs()
    assert change.max() <= tolerance + 1e-6 and fingerprints.stats["labels_kept"] == 1.0


def _faces(base, rng):
    """Identity = a bright quadrant plus its own colour: 4 identities, 20 images each."""
    labels = np.repeat(np.arange(4), 20)
    images = rng.integers(0, 50, (80, 16, 16, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8, label % 3] += 180
    return write_npz_folder(base, images=images, labels=labels)


def _ages(base, rng):
    """The value is the brightness of the image's centre (a learnable regression target); 32x32, so that the VGG's
    saliency grid is 2x2."""
    values = rng.uniform(0, 60, 96).astype(np.float32)
    images = rng.integers(0, 40, (96, 32, 32, 3), dtype=np.uint8)
    for i, value in enumerate(values):
        images[i, 8:24, 8:24] += np.uint8(value * 3)
    return write_npz_folder(base, images=images, labels=values)


ZOO = {
    "suspects": [
        {"name": "tuned", "kind": "positive", "transform": "finetune", "params": {"layers": "all", "epochs": 1}, "seed": 3},
        {"name": "pruned", "kind": "positive", "transform": "weight_prune", "params": {"ratio": 0.2, "recover_epochs": 0}, "seed": 1},
        {"name": "distilled", "kind": "positive", "transform": "distill", "params": {"epochs": 2}, "seed": 2},
        {"name": "other_a", "kind": "negative", "transform": "independent", "params": {"epochs": 2}, "seed": 4},
        {"name": "other_b", "kind": "negative", "transform": "independent", "params": {"epochs": 2}, "seed": 5},
    ]
}


#: MetaV's joint optimisation steps in the end-to-end runs (its default, 300, took 2-3 minutes per task on 2 cores).
METAV_STEPS = 100


@pytest.mark.slow(60)
@pytest.mark.parametrize("task, arch, make", [("regression", "vgg11_bn", _ages), ("similarity", "mobilefacenet", _faces)])
def test_each_task_runs_the_whole_protocol_from_the_command_line(tmp_path, task, arch, make, capsys, monkeypatch):
    from modelprint.fingerprints.metav import MetaV

    # MetaV's default configuration with fewer joint steps for this task (300 -> 100): `--schemes all` runs
    # every scheme in its default configuration, and 300 steps over the 20-model training zoo were most of the time.
    monkeypatch.setattr(MetaV, "task_settings", {"default": {task: {"steps": METAV_STEPS}}})
    data = make(tmp_path / "data", np.random.default_rng(0))
    (tmp_path / "zoo.json").write_text(json.dumps(ZOO))
    out = tmp_path / "run"
    code, printed, _ = run_cli(["evaluate", "--data", str(data), "--task", task, "--arch", arch, "--width", "8", "--epochs", "3",
                                "--zoo", str(tmp_path / "zoo.json"), "--n", "5", "--schemes", "all", "--out", str(out)], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"]["name"] == task
    # Every scheme that protects the task: TAFA reads outputs of any task (3 queries a pair) and matches its target;
    # MetaV learns from its training zoo (N queries) and calls its target pirated.
    assert list(report["schemes"]) == ["saliency", "metav", "tafa"]
    tafa, metav = report["schemes"]["tafa"], report["schemes"]["metav"]
    assert tafa["queries"]["black_box"] == 15 and tafa["target_scores"]["ms_black_box"]["mean"] == 1.0
    assert metav["queries"]["black_box"] == 5 and metav["target_scores"]["ms_black_box"]["mean"] > 0.5
    assert report["training_zoo"]["models"] == 20
    assert report["task"]["metric_name"] == {"regression": "mae", "similarity": "verification_accuracy"}[task]
    assert all(s["metric_name"] == report["task"]["metric_name"] and s["test_metric"] is not None for s in report["suspects"])
    for mode in ("white_box", "black_box"):
        assert 0.0 <= report["aruc"][mode]["mean"] <= 1.0
    stealth = report["stealth"]
    assert stealth["acc"]["mean"] == 1.0 and stealth["output_change_max"]["mean"] <= stealth["tolerance"]["mean"] + 1e-6
    fingerprints = FingerprintSet.load(out / "saliency" / "fingerprints-0.safetensors")
    assert fingerprints.task["name"] == task and ("pairs" in fingerprints.tensors) == (task == "similarity")
    if task == "similarity":
        assert set(report["task"]["target_tar_at_far"]) == {"0.01", "0.1"}
    assert f"task: {task}" in printed and "outputs kept within tolerance" in printed
    # Verification of a zoo suspect in black-box mode counts the pair images' queries (N more).
    code, printed, _ = run_cli(["verify", "--fingerprints", str(out / "saliency" / "fingerprints-0.safetensors"), "--suspect",
                                str(out / "zoo" / "suspects" / "tuned.safetensors"), "--mode", "black-box", "--task", task,
                                "--records", str(tmp_path / "records"), "--json"], capsys)
    assert code == 0
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["queries"] == (15 if task == "similarity" else 10)


def test_task_flags_that_contradict_the_model_fail_with_one_line(tmp_path, capsys, digits_target):
    model_file = save_model(digits_target, tmp_path / "model.safetensors")
    code, _, err = run_cli(["generate", "--model", str(model_file), "--out", str(tmp_path / "f.safetensors"), "--task", "regression"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--task regression, but the model" in err


def test_generate_without_a_configuration_steers_a_regression_owner_to_the_helper_models(tmp_path, capsys):
    """For regression the scheme's default is the owner's configuration: without helper models, one line that
    names the command which makes them, exit 2, nothing written; naming --configuration default still works."""
    data = _ages(tmp_path / "data", np.random.default_rng(0))
    model = build_model("vgg11_bn", num_outputs=1, width=4, task="regression", output_shift=30.0, output_scale=15.0).eval()
    model_file = save_model(model, tmp_path / "model.safetensors")
    out = tmp_path / "f.safetensors"
    code, _, err = run_cli(["generate", "--model", str(model_file), "--data", str(data), "--n", "3", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert "'owner' configuration" in err and "modelprint owner-models --target" in err and "--configuration default" in err
    code, _, err = run_cli(["generate", "--model", str(model_file), "--data", str(data), "--n", "3", "--steps", "2",
                            "--configuration", "default", "--out", str(out)], capsys)
    assert code == 0, err
    assert FingerprintSet.load(out).config["norm"] == "linf"  # the helper-free default, as named
