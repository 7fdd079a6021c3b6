"""Architecture registry. Every model is a top-level nn.Sequential of named stages, so the
evaluator can run the stages before the first generated parameter once and share them."""
from __future__ import annotations

from collections import OrderedDict
from math import prod

import torch
from torch import nn


def mlp(input_shape: tuple[int, ...], n_classes: int, width: int = 64) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        flat=nn.Flatten(),
        fc1=nn.Linear(prod(input_shape), width), bn1=nn.BatchNorm1d(width), act1=nn.ReLU(),
        fc2=nn.Linear(width, width), bn2=nn.BatchNorm1d(width), act2=nn.ReLU(),
        head=nn.Linear(width, n_classes),
    ))


def cnn(input_shape: tuple[int, ...], n_classes: int, width: int = 16) -> nn.Sequential:
    """Three conv blocks and a linear head; Conv1d for (C, L) inputs, Conv2d for (C, H, W)."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"cnn needs (C, L) or (C, H, W) inputs, got shape {input_shape}; use arch=mlp")
    conv, bn, pool = ((nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d) if len(input_shape) == 2
                      else (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d))
    c, w = input_shape[0], width
    return nn.Sequential(OrderedDict(
        conv1=conv(c, w, 3, padding=1), bn1=bn(w), act1=nn.ReLU(),
        conv2=conv(w, 2 * w, 3, stride=2, padding=1), bn2=bn(2 * w), act2=nn.ReLU(),
        conv3=conv(2 * w, 2 * w, 3, stride=2, padding=1), bn3=bn(2 * w), act3=nn.ReLU(),
        pool=pool(1), flat=nn.Flatten(),
        head=nn.Linear(2 * w, n_classes),
    ))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(input_shape: tuple[int, ...], n_classes: int, width: int = 64) -> nn.Sequential:
    """The CIFAR variant: 3x3 stem, no max-pool. Blocks are top-level stages."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs image inputs (C, H, W), got shape {input_shape}")
    stages = OrderedDict(stem=nn.Sequential(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
                                            nn.BatchNorm2d(width), nn.ReLU()))
    cin = width
    for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)], start=1):
        for j in range(2):
            stages[f"layer{i}_{j}"] = BasicBlock(cin, width * mult, stride if j == 0 else 1)
            cin = width * mult
    stages["pool"] = nn.AdaptiveAvgPool2d(1)
    stages["flat"] = nn.Flatten()
    stages["head"] = nn.Linear(cin, n_classes)
    return nn.Sequential(stages)


MODELS = {"mlp": mlp, "cnn": cnn, "resnet18": resnet18}


def build_model(arch: str, input_shape: tuple[int, ...], n_classes: int, width: int) -> nn.Sequential:
    if arch not in MODELS:
        raise ValueError(f"unknown architecture '{arch}'; choose one of: {', '.join(MODELS)}")
    return MODELS[arch](tuple(input_shape), n_classes, width)
