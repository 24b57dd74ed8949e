"""The demo detector in PyTorch (training only; the package runs the exported ONNX without torch).

A small YOLOX-style network: a strided conv backbone with residual blocks, a top-down feature
pyramid and one shared-shape head per stride (8, 16, 32).  ``forward`` returns raw logits
``[B, A, 5 + C]`` (rows ordered stride by stride, each row-major over the grid, as the YOLOX
decoder in :mod:`dpa_perception.core.postprocess` expects); :class:`ExportWrapper` applies the
sigmoid to objectness and class scores inside the graph for ONNX export.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa_perception.core.postprocess import yolox_grid

STRIDES = (8, 16, 32)


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a = ConvBN(c, c // 2, 1)
        self.b = ConvBN(c // 2, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class DemoDetector(nn.Module):
    def __init__(self, num_classes: int = 6, width: tuple[int, ...] = (12, 24, 48, 96, 128), neck: int = 40):
        super().__init__()
        w0, w1, w2, w3, w4 = width
        self.num_classes = num_classes
        self.stem = nn.Sequential(ConvBN(3, w0, 3, 2), ConvBN(w0, w1, 3, 2), Block(w1))  # /4
        self.c3 = nn.Sequential(ConvBN(w1, w2, 3, 2), Block(w2), Block(w2))  # /8
        self.c4 = nn.Sequential(ConvBN(w2, w3, 3, 2), Block(w3))  # /16
        self.c5 = nn.Sequential(ConvBN(w3, w4, 3, 2), Block(w4))  # /32
        self.l5 = ConvBN(w4, neck, 1)
        self.l4 = ConvBN(w3, neck, 1)
        self.l3 = ConvBN(w2, neck, 1)
        self.f4 = ConvBN(neck, neck, 3)
        self.f3 = ConvBN(neck, neck, 3)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.heads = nn.ModuleList(
            nn.Sequential(ConvBN(neck, neck, 3), ConvBN(neck, neck, 3), nn.Conv2d(neck, 5 + num_classes, 1))
            for _ in STRIDES
        )
        for h in self.heads:
            conv = h[-1]  # type: ignore[index]
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
            with torch.no_grad():
                conv.bias[4:] = -math.log((1 - 0.01) / 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [B, 3, H, W] scaled to 0..1 -> raw ``[B, A, 5 + C]`` (xy offsets, log wh, logits)."""
        x = self.stem(x)
        c3 = self.c3(x)
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p5 = self.l5(c5)
        p4 = self.f4(self.l4(c4) + self.up(p5))
        p3 = self.f3(self.l3(c3) + self.up(p4))
        outs = []
        for feat, head in zip((p3, p4, p5), self.heads):
            o = head(feat)
            outs.append(o.flatten(2).permute(0, 2, 1))
        return torch.cat(outs, 1)


class ExportWrapper(nn.Module):
    """Sigmoid on objectness and classes inside the graph: the YOLOX export layout.

    The input is already scaled to 0..1 by the package's pre-processing (``scale: 1/255`` in
    the description file), as during training.
    """

    def __init__(self, model: DemoDetector):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = self.model(images)
        return torch.cat([raw[..., :4], torch.sigmoid(raw[..., 4:])], -1)


def grids(hw: tuple[int, int], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid offsets (A, 2) and strides (A, 1) in the same row order as the model output.

    The very grid the package's YOLOX decoder uses, so training and inference cannot disagree.
    """
    grid, stride = yolox_grid(hw, STRIDES)
    return torch.tensor(grid, device=device), torch.tensor(stride, device=device)  # copies: the grid is cached


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
