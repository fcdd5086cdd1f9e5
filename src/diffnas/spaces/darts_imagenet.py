"""The DARTS ImageNet (mobile setting) network: stride-8 stem, 14 cells, C=48, 224x224 input.

Built from the same cells as the CIFAR network (`darts.Cell`, `darts.network_cells`); only
the stem, the auxiliary head and the starting channel bookkeeping differ, as in DARTS'
`NetworkImageNet`. Chosen with `space.build_network(..., network="imagenet")`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.spaces.darts import Cell, network_cells, op_table_for
from diffnas.spaces.genotype import Genotype


class AuxiliaryHeadImageNet(nn.Module):
    """DARTS' ImageNet auxiliary classifier, fed the 7x7 map after the second reduction.

    As in the authors' code (and their paper's experiments), the BatchNorm after the 2x2
    convolution is absent.
    """

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # 7x7 -> 2x2 (pool) -> 1x1 (2x2 conv) at 224x224; other sizes are pooled to 1x1
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DartsImageNetNetwork(nn.Module):
    """DARTS `NetworkImageNet`: stem0 (two stride-2 convs) and stem1 (one), then the cells.

    The first cell sees stem0's 56x56 map as s0 and stem1's 28x28 map as s1, so it starts
    with `reduction_prev=True` (its s0 input goes through FactorizedReduce).
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        drop_path_prob: float,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        c = channels
        self.drop_path_prob = drop_path_prob
        self.aux_pos = 2 * layers // 3
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        c_pp, c_p, c_curr = c, c, c
        self.cells = nn.ModuleList()
        reduction_prev = True
        c_aux = 0
        table = op_table_for(genotype)
        for i, (cell_g, reduction) in enumerate(network_cells(genotype, layers)):
            if reduction:
                c_curr *= 2
            cell = Cell(cell_g, c_pp, c_p, c_curr, reduction, reduction_prev, table)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_pos:
                c_aux = c_p
        self.auxiliary = AuxiliaryHeadImageNet(c_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux_logits = None
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        for i, cell in enumerate(self.cells):
            cell.drop_prob = self.drop_path_prob  # type: ignore[assignment]
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_pos and self.auxiliary is not None and self.training:
                aux_logits = self.auxiliary(s1)
        # DARTS pools the final 7x7 map with AvgPool2d(7); adaptive pooling equals it at 224x224
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        if aux_logits is not None:
            return logits, aux_logits
        return logits
