import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import LayerGradCam

from modelprint.access import WhiteBox
from modelprint.errors import InputError
from modelprint.fingerprints import SaliencyFingerprint
from modelprint.fingerprints.saliency import objective
from modelprint.fingerprints.saliency.readout import suspect_layer, white_box_values
from modelprint.models import build_model
from modelprint.gradcam import GradCAM, find_cam_layer, normalise_maps
from modelprint.tasks import Classification, Regression

from conftest import TinyCNN


@pytest.mark.parametrize("logit", [True, False])
def test_gradcam_matches_captum_on_resnet(logit):
    torch.manual_seed(1)
    model = build_model("resnet18", num_outputs=10, width=8).eval()
    x = torch.rand(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    task = Classification()
    with GradCAM(model, "net.layer4") as cam:
        ours, _ = cam(x, lambda out: task.score(out, labels, logit=logit))
    forward = model if logit else (lambda inp: F.softmax(model(inp), dim=1))
    theirs = LayerGradCam(forward, model.net.layer4).attribute(x, target=labels, relu_attributions=True)
    assert ours.shape == (6, 4, 4)
    assert theirs.shape == (6, 1, 4, 4)
    assert ours.abs().max() > 0  # a non-trivial comparison
    torch.testing.assert_close(ours, theirs[:, 0], atol=1e-5, rtol=1e-5)


def test_sam_loss_gradient_matches_finite_differences():
    """The double-backpropagated gradient of L_sam (eq. 3) w.r.t. the input, checked in float64."""
    torch.manual_seed(0)
    model = TinyCNN().double().eval()
    scheme = SaliencyFingerprint(sam_norm="sum")
    pattern = scheme.pattern_mask((4, 4)).double()
    labels = torch.tensor([0, 2])
    task = Classification()

    def sam_loss(x):
        with GradCAM(model, "features") as cam:
            maps, _ = cam(x, lambda out: task.score(out, labels), create_graph=True)
        return objective.sam_loss(maps, pattern, scheme.sam_norm).sum()

    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(sam_loss(x), x)
    assert grad.abs().max() > 1e-6  # the gradient exists: Grad-CAM kept its graph
    assert torch.autograd.gradcheck(sam_loss, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_the_surrogates_terms_combine_by_their_mean_or_their_worst():
    """helper_loss per sample: the references' terms averaged; the surrogates' averaged, or the largest of them
    (the surrogate that carries the trace least) with surrogate_weight="worst"."""
    torch.manual_seed(0)
    models = [TinyCNN().eval() for _ in range(3)]
    task = Classification()
    labels = torch.tensor([0, 1, 2])
    x = torch.rand(3, 3, 8, 8)
    pattern = SaliencyFingerprint().pattern_mask((4, 4))

    def score(out):
        return task.score(out, labels)

    def loss(settings, roles):
        with GradCAM(models[0], "features") as a, GradCAM(models[1], "features") as b, GradCAM(models[2], "features") as c:
            cams = [(role, cam) for role, cam in zip(roles, (a, b, c)) if role]
            return objective.helper_loss(settings, cams, task, x, labels, score, pattern).detach()

    for weight in ("mean", "worst"):
        settings = SaliencyFingerprint(beta=0.7, gamma=1.3, occlusion=0.5, bb_score="log", surrogate_weight=weight)
        alone = [loss(settings, [role if i == j else None for j, role in enumerate(("reference", "surrogate", "surrogate"))]) for i in range(3)]
        surrogates = torch.stack(alone[1:])
        expected = alone[0] + (surrogates.max(dim=0).values if weight == "worst" else surrogates.mean(dim=0))
        assert torch.allclose(loss(settings, ("reference", "surrogate", "surrogate")), expected, atol=1e-6)
    assert not torch.allclose(surrogates[0], surrogates[1])  # two surrogates that differ: the two rules differ
    with pytest.raises(InputError, match="surrogate_weight must be one of"):
        SaliencyFingerprint(surrogate_weight="median")
    with pytest.raises(InputError, match="surrogate_weight='worst' weighs the surrogates' terms"):
        SaliencyFingerprint(surrogate_weight="worst").check_helpers(surrogates=2)


def test_hooks_are_released_even_on_error(tiny_cnn):
    layer = tiny_cnn.features
    with pytest.raises(ValueError):
        with GradCAM(tiny_cnn, "features") as cam:
            assert len(layer._forward_hooks) == 1
            cam(torch.rand(2, 3, 8, 8), lambda out: out[:, 0])
            raise ValueError("boom")
    assert len(layer._forward_hooks) == 0


def test_layer_discovery():
    torch.manual_seed(0)
    assert find_cam_layer(build_model("resnet18", num_outputs=3, width=4), torch.rand(1, 3, 32, 32)) == "net.layer4"
    assert find_cam_layer(build_model("vgg11_bn", num_outputs=1, width=4), torch.rand(1, 3, 32, 32)) == "net.features"
    # A model that declares nothing: the last module with a spatial output, before global pooling.
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert find_cam_layer(plain, torch.rand(1, 3, 16, 16)) == "3"
    with pytest.raises(InputError, match="spatial feature map"):
        find_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(1, 3, 2, 2))


def test_a_grid_floor_moves_a_coarse_layer_to_the_last_wide_enough_one():
    """VGG11-BN declares its last stage, 2x2 at 32x32 and 1x1 at 28x28: with a floor of 4 the last module of its
    4x4 (7x7) stage is read instead; ResNet-18's declared 4x4 layer4 stays; no wide enough map is a clear error."""
    vgg = build_model("vgg11_bn", num_outputs=10, width=4)
    modules = dict(vgg.named_modules())
    assert find_cam_layer(vgg, torch.rand(1, 3, 32, 32), min_side=4) == "net.features.20"
    assert isinstance(modules["net.features.20"], nn.ReLU) and isinstance(modules["net.features.21"], nn.MaxPool2d)
    small = build_model("vgg11_bn", num_outputs=10, width=4, input_size=28, channels=1).train()
    statistics = {k: v.clone() for k, v in small.state_dict().items()}
    assert find_cam_layer(small, torch.rand(1, 1, 28, 28)) == "net.features"
    assert find_cam_layer(small, torch.rand(1, 1, 28, 28), min_side=4) == "net.features.13"
    # The probe is an eval-mode pass: a training model stays in training mode and its batch-norm statistics unmoved.
    assert small.training and all(m.training for m in small.modules())
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in statistics.items())
    resnet = build_model("resnet18", num_outputs=3, width=4)
    assert find_cam_layer(resnet, torch.rand(1, 3, 32, 32), min_side=4) == "net.layer4"
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert find_cam_layer(plain, torch.rand(1, 3, 14, 14)) == "3"  # 3x3
    assert find_cam_layer(plain, torch.rand(1, 3, 14, 14), min_side=4) == "1"  # 12x12
    with pytest.raises(InputError, match="at least 16x16"):
        find_cam_layer(plain, torch.rand(1, 3, 14, 14), min_side=16)


def test_a_coarser_suspect_is_read_on_a_map_as_fine_as_the_pattern():
    """A set made on a 4x4 grid reads a VGG11-BN suspect (no layer of the target's name) on its 4x4 stage, not on
    its 2x2 last stage; a suspect with the target's layer name is read there; a set made on a VGG11-BN target at
    32x32 stores its declared 2x2 layer, or its 4x4 stage with ``min_grid=4``."""
    vgg = build_model("vgg11_bn", num_outputs=3, width=4).eval()
    x = torch.rand(1, 3, 32, 32)
    assert suspect_layer(vgg, "net.layer4", x, 4) == "net.features.20"
    assert suspect_layer(vgg, "net.layer4", x) == "net.features"  # the rule of sets made on a coarser grid
    assert suspect_layer(vgg, "net.features", x, 4) == "net.features"  # the target's own layer, by name
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        labels = vgg(images).argmax(1)
    fingerprints = SaliencyFingerprint(n=2, steps=1, seed=0, min_grid=4).generate(vgg, images, labels)
    assert fingerprints.config["layer"] == "net.features.20" and fingerprints.tensors["pattern"].shape == (4, 4)
    default = SaliencyFingerprint(n=2, steps=1, seed=0).generate(vgg, images, labels)
    assert default.config["layer"] == "net.features" and default.tensors["pattern"].shape == (2, 2)


def test_unknown_layer_is_a_clear_error(tiny_cnn):
    with pytest.raises(InputError, match="no layer named"):
        with GradCAM(tiny_cnn, "nope"):
            pass


def test_normalise_maps():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(normalise_maps(maps, "max")[0], torch.tensor([[1 / 3, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(normalise_maps(maps, "sum")[0], torch.tensor([[0.25, 0.75], [0.0, 0.0]]))
    assert normalise_maps(maps, "max")[1].abs().sum() == 0  # an empty map stays empty, no NaN


class RedMinusGreen(nn.Module):
    """y = mean(red) - mean(green): a 1x1 convolution that copies the two channels, global pooling and a linear head
    with weights (+1, -1). Every position of an image redder than green raises y; of a greener one, lowers it."""

    cam_layer = "features"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1, bias=False)
        self.head = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.weight[1, 1] = 1.0
            self.head.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def _red_or_green(n: int = 40) -> torch.Tensor:
    """Images whose red and green halves of the channel mean differ clearly, half of them redder."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    redder = torch.arange(n) % 2 == 0
    x[redder, 0] += 0.6
    x[~redder, 1] += 0.6
    return x


def test_dominant_direction_is_the_sign_of_the_output_by_hand(tmp_path):
    """Grad-CAM of y is ReLU(red - green) / 64: zero everywhere on an image greener at every pixel; read as -y it is
    ReLU(green - red) / 64. The set stores sign(y) of each original, and the white-box value read with it is the
    hand-computed share of P in that max-normalised map."""
    model = RedMinusGreen().eval()
    images = _red_or_green()
    with torch.no_grad():
        values = model(images)[:, 0]
    scheme = SaliencyFingerprint(n=8, steps=2, seed=0, cam_direction="dominant", pattern=((0, 0), (0, 1)))
    fingerprints = scheme.generate(model, images, values, Regression(tolerance=10.0))
    originals = fingerprints.tensors["originals"]
    with torch.no_grad():
        expected = torch.where(model(originals)[:, 0] >= 0, 1.0, -1.0)
    assert set(fingerprints.tensors["direction"].tolist()) == {1.0, -1.0}
    assert torch.equal(fingerprints.tensors["direction"], expected)
    fingerprints.save(tmp_path / "set.safetensors")
    assert torch.equal(type(fingerprints).load(tmp_path / "set.safetensors").tensors["direction"], expected)

    read = white_box_values(WhiteBox(model), fingerprints)
    samples = fingerprints.samples
    # The map is ReLU(sum_k w_k A_k) / 64 read with the sign: ReLU(d (red - green)), max-normalised, averaged on P.
    cam = torch.relu(expected[:, None, None] * (samples[:, 0] - samples[:, 1]))
    pattern = fingerprints.tensors["pattern"]
    assert pattern.shape == (8, 8) and pattern.sum() == 2
    by_hand = (cam / cam.flatten(1).max(1).values[:, None, None] * pattern).sum(dim=(1, 2)) / pattern.sum()
    assert torch.allclose(read, by_hand, atol=1e-6)
    assert (read > 0).all()

    # The same set read the paper's way (F_c = y): the greener samples' maps vanish.
    plain = type(fingerprints)(**{**fingerprints.__dict__, "tensors": {k: v for k, v in fingerprints.tensors.items() if k != "direction"}})
    zero = white_box_values(WhiteBox(model), plain)[expected < 0]
    assert torch.equal(zero, torch.zeros_like(zero))


def test_dominant_direction_is_refused_for_classification(tiny_cnn):
    scheme = SaliencyFingerprint(n=2, steps=1, cam_direction="dominant")
    with pytest.raises(InputError, match="cam_direction='dominant'.*classification"):
        scheme.generate(tiny_cnn, torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long), Classification())
