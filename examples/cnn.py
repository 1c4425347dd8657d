"""A small CNN with BatchNorm: its signature carries buffers and BatchNorm's `_version` 2."""

from __future__ import annotations

from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = ConvBlock(3, width)
        self.stages = nn.Sequential(
            ConvBlock(width, width * 2, stride=2),
            ConvBlock(width * 2, width * 4, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width * 4, num_classes)

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x)))
        return self.head(x.flatten(1))
