"""The NAS-Bench-201 space: one cell of 4 nodes and 6 edges, 5 ops, a ResNet-like skeleton.

Owns the supernet, the argmax derivation, the benchmark's string format
(`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`) and the discrete network the benchmark trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.errors import ConfigError, GenotypeError
from diffnas.registry import SPACES
from diffnas.spaces.base import Space
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.spaces.ops import NB201_OPS, OpTable, ReLUConvBN
from diffnas.spaces.split_edge import build_edge, check_edge
from diffnas.supernet.base import ArchSpec, CellSite, Supernet
from diffnas.supernet.dag import SearchDAG
from diffnas.supernet.mixed import MixWeights

# the benchmark's edge order: node 1 <- 0; node 2 <- 0, 1; node 3 <- 0, 1, 2
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
N_NODES = 4


def to_nb201_string(genotype: Genotype) -> str:
    cell = genotype.cells[0]
    by_edge = {(e.src, e.dst): e.op for e in cell.edges}
    nodes = []
    for dst in range(1, N_NODES):
        nodes.append("|" + "|".join(f"{by_edge[(src, dst)]}~{src}" for src in range(dst)) + "|")
    return "+".join(nodes)


def from_nb201_string(text: str) -> Genotype:
    text = text.strip()
    parts = text.split("+")
    if len(parts) != N_NODES - 1:
        raise GenotypeError(
            f"NB201 string '{text}' must have {N_NODES - 1} node groups separated by '+', "
            f"like |nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
        )
    edges = []
    for dst, part in enumerate(parts, start=1):
        items = [x for x in part.strip().split("|") if x]
        if len(items) != dst:
            raise GenotypeError(
                f"NB201 string '{text}': node {dst} needs {dst} inputs, got {len(items)}"
            )
        for item in items:
            op, _, src = item.partition("~")
            if not (src.isascii() and src.isdigit()):
                raise GenotypeError(f"NB201 string '{text}': '{item}' should look like op~input")
            edges.append(Edge(op, int(src), dst))
    genotype = Genotype("nb201", (CellGenotype("normal", tuple(edges), None),))
    return Nb201Space().validate(genotype)


@SPACES.register("nb201")
class Nb201Space(Space):
    name = "nb201"
    op_table = NB201_OPS
    default_layers = 5  # cells per stage

    def __init__(self, cfg: SpaceConfig | None = None) -> None:
        super().__init__(cfg)
        self._n_alpha = 1
        if self.cfg.cells:
            pattern = self.cfg.cells.upper()
            per_cell = 3 * self.layers
            if set(pattern) != {"N"} or len(pattern) not in (3, per_cell):
                raise ConfigError(
                    f"space.cells '{self.cfg.cells}': the nb201 space takes 'NNN' (one α per "
                    f"stage) or {per_cell} N's (one α per cell, {self.layers} per stage); its "
                    f"stride-2 blocks are fixed residual blocks, so there are no R cells. Drop "
                    f"space.cells to share one α (the benchmark's single cell)"
                )
            self._n_alpha = len(pattern)

    def cell_keys(self) -> list[str]:
        """The α key of each searched cell of the supernet, stage by stage."""
        n = 3 * self.layers
        if self._n_alpha == 1:
            return ["cell"] * n
        if self._n_alpha == 3:
            return [f"cell{i // self.layers}" for i in range(n)]
        return [f"cell{i}" for i in range(n)]

    def arch_specs(self) -> dict[str, ArchSpec]:
        ops = tuple(self.ops)
        if self._n_alpha == 1:
            return {"cell": ArchSpec("cell", "normal", None, EDGES, ops, 1)}
        specs: dict[str, ArchSpec] = {}
        for i, key in enumerate(self.cell_keys()):
            specs.setdefault(key, ArchSpec(key, "normal", i // self.layers, EDGES, ops, 1))
        return specs

    def build_supernet(
        self, net: SupernetConfig, in_channels: int, num_classes: int, input_size: int
    ) -> Supernet:
        return Nb201Supernet(self, net, in_channels, num_classes, input_size)

    def derive(
        self, weights: dict[str, torch.Tensor], edge_weights: dict[str, torch.Tensor] | None = None
    ) -> Genotype:
        """Argmax op per edge. With several α (space.cells) the benchmark still scores one
        cell: each α's op weights are normalized per edge and averaged over the cells first."""
        specs = self.arch_specs()
        rows = []
        for key in specs:
            w = weights[key].detach().float().cpu()
            if len(specs) > 1:
                w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            rows.append(w)
        w = torch.stack(rows).mean(dim=0)
        edges = tuple(
            Edge(self.ops[int(torch.argmax(w[i]))], src, dst) for i, (src, dst) in enumerate(EDGES)
        )
        return Genotype(self.name, (CellGenotype("normal", edges, None),))

    def validate(self, genotype: Genotype) -> Genotype:
        self.check_space(genotype)
        if genotype.network is not None:
            raise GenotypeError(
                "nb201 genotypes take no 'network' section (its network is fixed: 3 stages of "
                "equal cells); drop it and choose sizes with --channels/--layers"
            )
        if len(genotype.cells) != 1 or genotype.cells[0].type != "normal":
            raise GenotypeError(
                f"an nb201 genotype has exactly one normal cell, got {len(genotype.cells)} cell(s)"
            )
        cell = genotype.cells[0]
        seen: dict[tuple[int, int], str] = {}
        for e in cell.edges:
            self.op_table[e.op]
            if (e.src, e.dst) not in EDGES:
                raise GenotypeError(
                    f"nb201 genotype: bad edge index {e.src}->{e.dst}; the cell's edges are "
                    f"{', '.join(f'{s}->{d}' for s, d in EDGES)}"
                )
            if (e.src, e.dst) in seen:
                raise GenotypeError(f"nb201 genotype: edge {e.src}->{e.dst} appears twice")
            check_edge(e, "nb201 genotype")
            seen[(e.src, e.dst)] = e.op
        missing = [f"{s}->{d}" for s, d in EDGES if (s, d) not in seen]
        if missing:
            raise GenotypeError(
                f"nb201 genotype: wrong node/edge count: missing edges {', '.join(missing)} "
                f"(give every one of the 6 edges an op, 'none' included)"
            )
        return genotype

    def build_network(
        self,
        genotype: Genotype,
        *,
        num_classes: int,
        in_channels: int = 3,
        channels: int | None = None,
        layers: int | None = None,
        auxiliary: bool = False,
        drop_path: float = 0.0,
        network: str = "cifar",
    ) -> nn.Module:
        self.validate(genotype)
        self.check_network(network)
        return Nb201Network(genotype, channels or 16, layers or 5, num_classes, in_channels)


# =========================================================================== shared blocks
class ResNetBlock(nn.Module):
    """The stride-2 residual block joining two stages (NB201's skeleton)."""

    def __init__(self, c_in: int, c_out: int, track: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine=True, track=track)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=True, track=track)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _skeleton(channels: int, layers: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction_block) for each position of the network."""
    out = []
    for stage in range(3):
        c = channels * 2**stage
        if stage:
            out.append((c, True))
        out += [(c, False)] * layers
    return out


# =========================================================================== supernet
class Nb201Supernet(Supernet):
    def __init__(
        self,
        space: Nb201Space,
        net: SupernetConfig,
        in_channels: int,
        num_classes: int,
        input_size: int,
    ) -> None:
        super().__init__()
        self.arch_specs = space.arch_specs()
        self.op_cost = space.op_cost
        spec = next(iter(self.arch_specs.values()))  # every α has the same edges and ops
        keys = iter(space.cell_keys())
        c0 = space.cfg.channels
        # As XAutoDL's NB201 search networks: the stem, the residual blocks and the last
        # activation keep BN running statistics (used in eval mode); the cells' BNs use
        # batch statistics only.
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0)
        )

        def make_op(name: str, channels: int, stride: int) -> nn.Module:
            return space.op_table[name].build(channels, stride, False, True)

        self.blocks = nn.ModuleList()
        self.keys: list[str | None] = []  # α key of each block; None: a residual block
        self.sites: list[CellSite] = []
        c_prev, size = c0, input_size
        for c, reduction in _skeleton(c0, space.layers):
            if reduction:
                self.blocks.append(ResNetBlock(c_prev, c))
                size = (size + 1) // 2
            else:
                self.blocks.append(
                    SearchDAG(
                        1,
                        N_NODES,
                        list(spec.edges),
                        list(spec.ops),
                        c,
                        stride=lambda src: 1,
                        make_op=make_op,
                        partial_channels=net.partial_channels,
                        node_bn=net.node_bn,
                        aux_skip=net.aux_skip,
                    )
                )
                key = next(keys)
                self.sites.append(CellSite(key, c, size, size, False))
            self.keys.append(None if reduction else key)
            c_prev = c
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU())
        self.classifier = nn.Linear(c_prev, num_classes)
        self.set_layout()

    def forward(self, x: torch.Tensor, mix: MixWeights) -> torch.Tensor:
        x = self.set_layout(x)  # type: ignore[assignment]
        x = self.stem(x)
        for block, key in zip(self.blocks, self.keys):
            if key is None:
                x = block(x)
            else:
                edge_scale = None if mix.edges is None else mix.edges[key]
                x = block(
                    [x],
                    mix.ops[key],
                    mix.active_for(key),
                    edge_scale,
                    mix.bias_for(key),
                    mix.connect_none,
                )[-1]
        x = self.lastact(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# =========================================================================== discrete net
class InferCell(nn.Module):
    """One NB201 cell of the discrete network; `none` edges are dropped.

    A node whose every input edge is `none` is a zero tensor, and its out-edge ops still
    run on it, as in the benchmark's network (XAutoDL `cell_infers/cells.py`): a conv-BN
    on zeros outputs BN's shift β (train mode) or β − γ·μ/σ (eval mode), not zero.
    """

    def __init__(self, cell: CellGenotype, channels: int, table: OpTable = NB201_OPS) -> None:
        super().__init__()
        kept = [e for e in cell.edges if e.op != "none"]
        self.edges = [(e.src, e.dst) for e in kept]
        self.edge_specs = kept  # aligned with self.ops (profile cross-checks)
        # an edge with an ACA skip fraction s > 0 becomes an ACA edge (see spaces/split_edge.py)
        self.ops = nn.ModuleList(build_edge(table, e, channels, 1) for e in kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x, None, None, None]
        for (src, dst), op in zip(self.edges, self.ops):
            inp = nodes[src]
            if inp is None:  # the source node only receives 'none' edges: it is zero
                inp = nodes[src] = torch.zeros_like(x)
            h = op(inp)
            nodes[dst] = h if nodes[dst] is None else nodes[dst] + h
        out = nodes[-1]
        return out if out is not None else torch.zeros_like(x)


class Nb201Network(nn.Module):
    """The network NAS-Bench-201 trained for each cell (C=16, 5 cells per stage)."""

    def __init__(
        self, genotype: Genotype, channels: int, layers: int, num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        cell = genotype.cells[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        blocks: list[nn.Module] = []
        c_prev = channels
        from diffnas.registry import SPACES

        table = SPACES.get(genotype.space).op_table if genotype.space in SPACES else NB201_OPS
        for c, reduction in _skeleton(channels, layers):
            blocks.append(ResNetBlock(c_prev, c) if reduction else InferCell(cell, c, table))
            c_prev = c
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU())
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))
