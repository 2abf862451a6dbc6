import pytest
import torch
import torch.nn as nn

from modelprint.errors import InputError
from modelprint.models import build_model, state_sha256
from modelprint.losses import supervised_loss
from modelprint.train import TrainConfig, augment_batch, fit
from modelprint.zoo import FineTune, WeightPrune
from modelprint.zoo.prune import prune_smallest_


def test_prune_smallest_by_hand():
    w = torch.tensor([[0.5, -0.1, 0.3], [-0.2, 0.05, -0.9]])
    prune_smallest_(w, 0.5)
    assert (w != 0).tolist() == [[True, False, True], [False, False, True]]


def test_weight_prune_every_layer_and_provenance(digits):
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=4)
    pruned = WeightPrune(ratio=0.3, recover_epochs=0).apply(model, digits.train, seed=5)
    for module in pruned.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert (module.weight == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert state_sha256(model) != state_sha256(pruned)
    assert pruned.spec.info["transform"] == "weight_prune" and pruned.spec.info["params"]["ratio"] == 0.3
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


def test_filter_prune_zeroes_smallest_l1_filters_and_their_batch_norm():
    from modelprint.zoo.prune import FilterPrune, conv_batchnorm_pairs

    torch.manual_seed(0)
    model = build_model("vgg11_bn", num_outputs=3, width=8, input_size=(16, 16))
    first_conv, first_bn = conv_batchnorm_pairs(model)[0]
    l1 = first_conv.weight.detach().abs().flatten(1).sum(dim=1)
    expected = set(l1.argsort()[: round(first_conv.out_channels / 4)].tolist())
    pruned = FilterPrune(ratio=0.25, recover_epochs=0).apply(model, None, seed=0)
    conv, bn = conv_batchnorm_pairs(pruned)[0]
    zero = {i for i in range(conv.out_channels) if conv.weight[i].abs().sum() == 0}
    assert zero == expected
    assert all(bn.weight[i] == 0 and bn.bias[i] == 0 for i in zero)
    # The pruned channels output exactly zero after conv + batch norm: the network computes the physically pruned one.
    activation = {}
    bn.register_forward_hook(lambda m, i, o: activation.setdefault("out", o))
    pruned(torch.rand(2, 3, 16, 16))
    assert activation["out"][:, sorted(zero)].abs().max() == 0


def test_filter_prune_removes_a_depthwise_conv_with_the_channels_that_feed_it():
    from modelprint.zoo.prune import FilterPrune, conv_batchnorm_pairs, is_depthwise

    torch.manual_seed(0)
    # expand 4 -> 8 channels, depthwise 3x3 on the 8, project 8 -> 4: a MobileNet-style block.
    block = nn.Sequential(
        nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8), nn.PReLU(8),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.PReLU(8),
        nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4),
    )
    for norm in (block[1], block[4], block[7]):
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 2), norm.bias.data.uniform_(-1, 1)
    block.eval()
    expand_l1 = block[0].weight.detach().abs().flatten(1).sum(dim=1)
    dropped = sorted(expand_l1.argsort()[:2].tolist())  # round(0.25 * 8) smallest-L1 expansion filters
    kept = [c for c in range(8) if c not in dropped]
    physical = nn.Sequential(
        nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6), nn.PReLU(6),
        nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), nn.BatchNorm2d(6), nn.PReLU(6),
    ).eval()
    for small, big in zip(physical, block):
        for name, tensor in [*small.named_parameters(), *small.named_buffers()]:
            if tensor.ndim:  # every per-channel tensor, sliced to the kept channels
                tensor.data.copy_(getattr(big, name)[kept])
    x = torch.rand(3, 4, 6, 6)
    with torch.no_grad():
        reference = physical(x)
    FilterPrune(ratio=0.25)._prune(block)

    (_, _), (depthwise, _), _ = conv_batchnorm_pairs(block)
    assert is_depthwise(depthwise) and not is_depthwise(block[0]) and not is_depthwise(block[6])
    assert [c for c in range(8) if depthwise.weight[c].abs().sum() == 0] == dropped
    with torch.no_grad():
        out = block[:6](x)
    # The masked block computes the physically pruned one: dropped channels are exactly zero (not the batch norm's
    # shift, a constant), the kept ones what the smaller network computes.
    assert out[:, dropped].abs().max() == 0
    torch.testing.assert_close(out[:, kept], reference)


def test_pruning_recovers_when_the_metric_falls_and_holds_the_mask(digits):
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=4)
    fit(model, digits.train.subset(range(256)), supervised_loss("classification"), TrainConfig(epochs=2, batch_size=64), progress=False)
    data = digits.train.subset(range(256))
    pruned = WeightPrune(ratio=0.9, recover_if=0.0, recover_epochs=1).apply(model, data, seed=3)
    assert pruned.spec.info["recovery_epochs"] == 1 and "pruning_metric_lost" in pruned.spec.info
    for module in pruned.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert (module.weight == 0).float().mean().item() >= 0.89  # the mask held through the recovery fine-tune
    untouched = WeightPrune(ratio=0.1, recover_epochs=0).apply(model, data, seed=3)
    assert "recovered" not in untouched.spec.info


def test_retrain_reinitialises_the_head_and_distill_starts_fresh(digits):
    from modelprint.zoo import Distill, Retrain

    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=4).eval()
    small = digits.train.subset(range(64))
    retrained = Retrain(epochs=0, layers="last").apply(model, small, seed=4)
    assert not torch.equal(retrained.net.fc.weight, model.net.fc.weight)
    assert torch.equal(retrained.net.stem[0].weight, model.net.stem[0].weight)
    distilled = Distill(epochs=1, augment="").apply(model, small, seed=5)
    assert not torch.equal(distilled.net.stem[0].weight, model.net.stem[0].weight)
    assert distilled.spec.info["transform"] == "distill" and distilled.spec.info["parent_sha256"] == state_sha256(model)
    assert Distill(epochs=1, augment="").apply(model, small, seed=5).state_dict()["net.fc.weight"].equal(distilled.net.fc.weight)


def test_independent_models_record_no_parent(digits):
    from modelprint.zoo import Independent

    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=4)
    negative = Independent(epochs=0).apply(model, digits.train.subset(range(32)), seed=7)
    assert "parent_sha256" not in negative.spec.info and negative.spec.info["seed"] == 7
    assert not torch.equal(negative.net.stem[0].weight, model.net.stem[0].weight)
