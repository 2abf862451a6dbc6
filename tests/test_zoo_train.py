import pytest
import torch
import torch.nn as nn

from modelprint.errors import InputError
from modelprint.models import build_model, state_sha256
from modelprint.train import TrainConfig, augment_batch, fit, supervised_loss
from modelprint.zoo import FineTune, WeightPrune
from modelprint.zoo.prune import prune_smallest_


def test_prune_smallest_by_hand():
    w = torch.tensor([[0.5, -0.1, 0.3], [-0.2, 0.05, -0.9]])
    prune_smallest_(w, 0.5)
    assert (w != 0).tolist() == [[True, False, True], [False, False, True]]


def test_weight_prune_every_layer_and_provenance(digits):
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=4)
    pruned = WeightPrune(ratio=0.3).apply(model, digits.train, seed=5)
    for module in pruned.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert (module.weight == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert state_sha256(model) != state_sha256(pruned)
    assert pruned.spec.info["transform"] == "weight_prune" and pruned.spec.info["params"] == {"ratio": 0.3}
    assert pruned.spec.info["parent_sha256"] == state_sha256(model)
    assert (model.net.fc.weight == 0).sum() == 0  # the parent is untouched
    with pytest.raises(InputError):
        WeightPrune(ratio=1.0)


def test_finetune_last_layer_only_changes_the_head(digits):
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=4).eval()
    tuned = FineTune(epochs=1, layers="last", augment="").apply(model, digits.train.subset(range(64)), seed=1)
    before, after = model.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k]) and "running" not in k and "num_batches" not in k}
    assert changed == {"net.fc.weight", "net.fc.bias"}


def test_training_lowers_the_loss_and_is_seeded(digits):
    data = digits.train.subset(range(128))
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("resnet18", num_outputs=10, width=4)
        losses.append(fit(model, data, supervised_loss("classification"), TrainConfig(epochs=3, batch_size=32, augment="crop"), progress=False))
    assert losses[0] == losses[1]
    assert losses[0][-1] < losses[0][0]


def test_augmentation_shapes_and_translation():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) / 128
    out = augment_batch(x, "crop,flip", g)
    assert out.shape == x.shape
    assert augment_batch(x, "", g).equal(x)
    with pytest.raises(InputError):
        augment_batch(x, "rotate", g)
