"""Dist-U-Net and Dist-FCN in PyTorch, for the torch engine (``dist_strategy`` ``torch_ddp``).

Layer for layer the Keras models of :mod:`~autocnnp.components.models.unet` and
:mod:`~autocnnp.components.models.fcn`, with the same parameters (``<CNN_archi><param>``), the
same parameter counts and the same initialisers (He-normal U-Net convolutions, Glorot-uniform
elsewhere, zero biases, zero score layers in FCN). Differences that do not change the
parameter count: tensors are ``(N, C, H, W)`` (the torch engine transposes the data
pipeline's ``(N, H, W, C)`` batches) and FCN's ``vgg16_weights`` (a Keras ``.h5`` file) is not
read here.

Every model, built-in or from a user architecture file, maps images ``(N, C, H, W)`` to
per-pixel class probabilities ``(N, num_classes, H, W)`` (it ends with a softmax), as the
Keras models do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autocnnp.components.models.contract import check_fcn_size, check_unet_settings

#: VGG-16's convolutions per block (as the Keras FCN)
VGG_BLOCKS = (2, 2, 3, 3, 3)


def _he_normal(conv: nn.Module) -> nn.Module:
    # Keras's he_normal is a truncated normal with std sqrt(2 / fan_in)
    fan_in = conv.weight[0].numel()
    std = (2.0 / fan_in) ** 0.5 / 0.87962566103423978
    nn.init.trunc_normal_(conv.weight, 0.0, std, -2 * std, 2 * std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _glorot(conv: nn.Module) -> nn.Module:
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class _ConvBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, batchnorm: bool) -> None:
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(_he_normal(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3,
                                               padding=1, bias=not batchnorm)))
            if batchnorm:
                # Keras's BatchNormalization: momentum 0.99 (torch counts 1 - that), eps 1e-3
                layers.append(nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """The U-Net of :func:`~autocnnp.components.models.unet.build_unet`, in PyTorch."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 3,
                 base_filters: int = 16, dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        channels = in_channels
        for level in range(depth - 1):
            self.down.append(_ConvBlock(channels, base_filters * 2 ** level, batchnorm))
            channels = base_filters * 2 ** level
        bottom = base_filters * 2 ** (depth - 1)
        self.bottleneck = _ConvBlock(channels, bottom, batchnorm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        channels = bottom
        for level in reversed(range(depth - 1)):
            filters = base_filters * 2 ** level
            self.upconv.append(_glorot(nn.ConvTranspose2d(channels, filters, 2, stride=2)))
            self.up.append(_ConvBlock(2 * filters, filters, batchnorm))
            channels = filters
        self.classes = _glorot(nn.Conv2d(channels, num_classes, 1))
        self.pool = nn.MaxPool2d(2)
        self.name = f"unet_d{depth}_f{base_filters}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
            x = block(torch.cat([skip, upconv(x)], dim=1))
        # softmax in float32 even under mixed precision, for a stable loss (as in Keras)
        return torch.softmax(self.classes(x).float(), dim=1)


class FCN8s(nn.Module):
    """The FCN-8s of :func:`~autocnnp.components.models.fcn.build_fcn`, in PyTorch."""

    def __init__(self, in_channels: int, num_classes: int, base_filters: int = 16,
                 fc_filters: int = 0, dropout: float = 0.5) -> None:
        super().__init__()
        fc = fc_filters or 16 * base_filters
        self.blocks = nn.ModuleList()
        channels = in_channels
        for block, convs in enumerate(VGG_BLOCKS, start=1):
            filters = base_filters * min(2 ** (block - 1), 8)
            layers: list[nn.Module] = []
            for _ in range(convs):
                layers += [_glorot(nn.Conv2d(channels, filters, 3, padding=1)), nn.ReLU(inplace=True)]
                channels = filters
            layers.append(nn.MaxPool2d(2))
            self.blocks.append(nn.Sequential(*layers))
        self.fc = nn.Sequential(
            _glorot(nn.Conv2d(channels, fc, 7, padding=3)), nn.ReLU(inplace=True),
            nn.Dropout(dropout), _glorot(nn.Conv2d(fc, fc, 1)), nn.ReLU(inplace=True),
            nn.Dropout(dropout))
        self.score_fr = self._score(fc, num_classes)
        pool3 = base_filters * 4
        pool4 = base_filters * 8
        self.score_pool4 = self._score(pool4, num_classes)
        self.score_pool3 = self._score(pool3, num_classes)
        # "same" transposed convolutions: kernel 4 stride 2 -> x2, kernel 16 stride 8 -> x8
        self.up_pool4 = _glorot(nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1))
        self.up_pool3 = _glorot(nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1))
        self.up_final = _glorot(nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4))
        self.name = f"fcn8s_vgg16_f{base_filters}"

    @staticmethod
    def _score(in_ch: int, num_classes: int) -> nn.Conv2d:
        conv = nn.Conv2d(in_ch, num_classes, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pools = []
        for block in self.blocks:
            x = block(x)
            pools.append(x)
        x = self.score_fr(self.fc(x))
        x = self.up_pool4(x) + self.score_pool4(pools[3])
        x = self.up_pool3(x) + self.score_pool3(pools[2])
        return torch.softmax(self.up_final(x).float(), dim=1)


def build_unet(input_shape: tuple[int, int, int], num_classes: int, depth: int = 3,
               base_filters: int = 16, dropout: float = 0.0, batchnorm: bool = False) -> UNet:
    """Build a U-Net for images of ``input_shape`` (H, W, C); checks as the Keras builder."""
    check_unet_settings(input_shape, depth, base_filters, dropout)
    return UNet(int(input_shape[-1]), num_classes, depth, base_filters, dropout, batchnorm)


def build_fcn(input_shape: tuple[int, int, int], num_classes: int, vgg16_weights: str = "",
              base_filters: int = 0, fc_filters: int = 0, dropout: float = 0.5) -> FCN8s:
    """Build an FCN-8s for images of ``input_shape`` (H, W, C); checks as the Keras builder."""
    if vgg16_weights:
        raise ValueError("vgg16_weights is a Keras .h5 file, which the torch engine does not "
                         "read; drop the parameter (random initialisation) or use "
                         "dist_strategy ring_allreduce")
    base = base_filters or 16
    check_fcn_size(input_shape)
    return FCN8s(int(input_shape[-1]), num_classes, base, fc_filters, dropout)


#: built-in architecture name -> builder, for the torch engine
BUILTINS: dict[str, Any] = {"unet": build_unet, "fcn": build_fcn}


def count_params(model: nn.Module) -> int:
    """Trainable and non-trainable parameters and buffers counted as Keras's
    ``count_params`` does: weights and BatchNorm's moving statistics, not its step counter."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers()
                if name.endswith(("running_mean", "running_var")))
    return params + stats
