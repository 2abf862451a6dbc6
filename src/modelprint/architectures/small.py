"""modelprint's own architectures for small inputs: ResNet-18, VGG11-BN and MobileFaceNet, by name in :data:`ARCHITECTURES`.

Each declares its Grad-CAM layer (``cam_layer``); :mod:`modelprint.models` wraps them with their preprocessing.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..errors import InputError

# ---------------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small inputs: a 3x3 stem without max-pool, so a 32x32 input leaves a 4x4 grid at ``layer4``.

    Args:
        num_outputs: number of classes (or output values).
        in_channels: image channels.
        width: channels of the first stage; 64 is the real ResNet-18, 16 the CPU default.
    """

    cam_layer = "layer4"

    def __init__(self, num_outputs: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.layer1 = nn.Sequential(BasicBlock(width, planes[0], 1), BasicBlock(planes[0], planes[0], 1))
        self.layer2 = nn.Sequential(BasicBlock(planes[0], planes[1], 2), BasicBlock(planes[1], planes[1], 1))
        self.layer3 = nn.Sequential(BasicBlock(planes[1], planes[2], 2), BasicBlock(planes[2], planes[2], 1))
        self.layer4 = nn.Sequential(BasicBlock(planes[2], planes[3], 2), BasicBlock(planes[3], planes[3], 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[3], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class VGG11BN(nn.Module):
    """VGG11 with batch norm: the conv feature extractor and a linear head.

    The fifth max-pool is left out so that small inputs keep a saliency grid (32x32 -> 2x2, 64x64 -> 4x4).

    Args:
        num_outputs: classes, or 1 for a regressor.
        in_channels: image channels.
        width: channels of the first conv (64 in the original VGG11); the others scale with it.
    """

    cam_layer = "features"
    _plan = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8)
    #: The least input side: four max-pools halve it to a 1x1 map at 16.
    min_input_size = 16

    def __init__(self, num_outputs: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in self._plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = int(item) * width
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn(cin, hidden, 1, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileFaceNet(nn.Module):
    """A MobileFaceNet-style embedding network (Chen et al. 2018) for small face images.

    Depthwise-separable inverted residuals with PReLU, a 1x1 conv (the Grad-CAM layer ``conv_last``), then a global
    depthwise conv (GDC) over the whole grid and a linear + BN embedding. Strides are set for small inputs: the
    grid is ``input_size / 8`` (4x4 at 32x32).

    Args:
        num_outputs: embedding dimension.
        in_channels: image channels.
        width: channels of the stem (64 in the original).
        input_size: side of the input image; fixes the GDC kernel.
    """

    cam_layer = "conv_last"
    # (expansion, output channels as a multiple of width, repeats, stride of the first)
    _plan = ((2, 1, 2, 2), (4, 2, 2, 2), (2, 2, 2, 1), (4, 2, 1, 2), (2, 2, 2, 1))

    def __init__(self, num_outputs: int = 128, in_channels: int = 3, width: int = 32, input_size: int = 32) -> None:
        super().__init__()
        if input_size % 8:
            raise InputError(f"MobileFaceNet needs an input size divisible by 8, got {input_size}")
        self.stem = nn.Sequential(_conv_bn(in_channels, width, 3, 1), _conv_bn(width, width, 3, 1, groups=width))
        blocks: list[nn.Module] = []
        channels = width
        for expansion, mult, repeats, stride in self._plan:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, mult * width, stride if i == 0 else 1, expansion))
                channels = mult * width
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = _conv_bn(channels, 4 * width, 1, 1)
        grid = input_size // 8
        self.gdc = _conv_bn(4 * width, 4 * width, grid, 1, groups=4 * width, act=False)
        self.gdc[0].padding = (0, 0)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(4 * width, num_outputs, bias=False), nn.BatchNorm1d(num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.gdc(self.conv_last(self.blocks(self.stem(x)))))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "vgg11_bn": VGG11BN,
    "mobilefacenet": MobileFaceNet,
}
