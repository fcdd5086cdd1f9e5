"""The DARTS cell space: 8 ops, cells of 2 inputs + 4 nodes (14 edges), normal/reduce.

Owns the search supernet (shared or per-cell α), the top-2 derivation, genotype
validation and the discrete CIFAR network (auxiliary head, drop-path).
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
from diffnas.spaces.ops import DARTS_OPS, FactorizedReduce, OpTable, ReLUConvBN
from diffnas.spaces.split_edge import ACAEdge, build_edge, check_edge
from diffnas.supernet.base import ArchSpec, CellSite, Supernet
from diffnas.supernet.dag import SearchDAG
from diffnas.supernet.mixed import MixWeights


def cell_edges(nodes: int) -> list[tuple[int, int]]:
    """DARTS edge order: for node j = 2.., its inputs 0..j-1."""
    return [(i, j) for j in range(2, 2 + nodes) for i in range(j)]


def reduction_layers(layers: int) -> set[int]:
    return {layers // 3, 2 * layers // 3}


def parse_pattern(pattern: str) -> list[str]:
    types = []
    for ch in pattern.upper():
        if ch not in "NR":
            raise ConfigError(
                f"space.cells '{pattern}': use one letter per searched cell, N (normal) or R "
                f"(reduction), e.g. NRNRN"
            )
        types.append("normal" if ch == "N" else "reduce")
    if "normal" not in types:
        raise ConfigError(f"space.cells '{pattern}' needs at least one normal cell (N)")
    return types


@SPACES.register("darts")
class DartsSpace(Space):
    name = "darts"
    edges_per_node = 2
    op_table = DARTS_OPS
    default_layers = 8

    def __init__(self, cfg: SpaceConfig | None = None) -> None:
        super().__init__(cfg)
        if self.cfg.cells:
            n = len(parse_pattern(self.cfg.cells))
            if self.cfg.layers is not None and self.cfg.layers != n:
                raise ConfigError(
                    f"space.cells '{self.cfg.cells}' gives the supernet {n} cells but "
                    f"space.layers is {self.cfg.layers}; drop space.layers (set it to null) or "
                    f"make the two agree"
                )

    # ------------------------------------------------------------------ search side
    def cell_types(self) -> list[str]:
        """Type of each cell of the supernet."""
        if self.cfg.cells:
            return parse_pattern(self.cfg.cells)
        reds = reduction_layers(self.layers)
        return ["reduce" if i in reds else "normal" for i in range(self.layers)]

    def cell_keys(self) -> list[str]:
        """The α key each supernet cell uses."""
        if self.cfg.cells:
            return [f"cell{i}" for i in range(len(self.cell_types()))]
        return self.cell_types()

    def arch_specs(self) -> dict[str, ArchSpec]:
        edges = tuple(cell_edges(self.cfg.nodes))
        ops = tuple(self.ops)
        if not self.cfg.cells:
            return {t: ArchSpec(t, t, None, edges, ops, 2) for t in ("normal", "reduce")}
        specs = {}
        reductions = 0
        for i, t in enumerate(self.cell_types()):
            stage = reductions
            if t == "reduce":
                stage = reductions
                reductions += 1
            specs[f"cell{i}"] = ArchSpec(f"cell{i}", t, stage, edges, ops, 2)
        return specs

    def build_supernet(
        self, net: SupernetConfig, in_channels: int, num_classes: int, input_size: int
    ) -> Supernet:
        return DartsSupernet(self, net, in_channels, num_classes, input_size)

    # ------------------------------------------------------------------ derivation
    def derive(
        self,
        weights: dict[str, torch.Tensor],
        edge_weights: dict[str, torch.Tensor] | None = None,
        k: int | None = None,
    ) -> Genotype:
        k = self.edges_per_node if k is None else k
        cells = []
        for key, spec in self.arch_specs().items():
            w = weights[key].detach().float().cpu()
            candidates = [o for o, name in enumerate(spec.ops) if name != "none"]
            strength = w[:, candidates].max(dim=1).values
            if edge_weights is not None:
                strength = strength * edge_weights[key].detach().float().cpu()
            edges = []
            for dst, rows in spec.incoming().items():
                # stable sort: ties go to the lower source node, as in DARTS
                kept = sorted(rows, key=lambda r: -float(strength[r]))[:k]
                for r in sorted(kept, key=lambda r: spec.edges[r][0]):
                    best = max(candidates, key=lambda o: float(w[r, o]))
                    edges.append(Edge(spec.ops[best], spec.edges[r][0], dst))
            concat = tuple(range(2, 2 + self.cfg.nodes))
            cells.append(CellGenotype(spec.cell_type, tuple(edges), spec.stage, concat))
        return Genotype(self.name, tuple(cells))

    # ------------------------------------------------------------------ genotypes
    def validate(self, genotype: Genotype) -> Genotype:
        self.check_space(genotype)
        for i, cell in enumerate(genotype.cells):
            where = f"darts genotype cell {i} ({cell.type})"
            dsts = set()
            for e in cell.edges:
                self.op_table[e.op]  # unknown op -> GenotypeError with the op list
                if e.op == "none":
                    raise GenotypeError(
                        f"{where}: edge {e.src}->{e.dst} uses 'none'; drop the edge instead"
                    )
                check_edge(e, where)
                if e.src < 0 or e.dst < 2 or e.src >= e.dst:
                    raise GenotypeError(
                        f"{where}: bad edge index {e.src}->{e.dst}: sources are 0, 1 (cell inputs) or "
                        f"an earlier node, destinations are nodes 2, 3, ..."
                    )
                dsts.add(e.dst)
            last = max(dsts)
            missing = [j for j in range(2, last + 1) if j not in dsts]
            if missing:
                raise GenotypeError(
                    f"{where}: wrong node count: nodes {missing} have no incoming edge "
                    f"(nodes must be numbered 2..{last} without gaps)"
                )
            nodes = last - 1
            # a cell from a search with space.nodes=N says so with concat [2, .., N+1]
            declared = self.cfg.nodes if cell.concat is None else max(cell.concat, default=1) - 1
            if nodes != declared:
                raise GenotypeError(
                    f"{where}: {nodes} intermediate nodes (2..{last}) but "
                    + (
                        f"the darts cell has {declared} (2..{declared + 1}); a cell with "
                        f'{nodes} nodes lists them in concat, e.g. "concat": '
                        f"{list(range(2, last + 1))}"
                        if cell.concat is None
                        else f"its concat {list(cell.concat)} ends at node {declared + 1}"
                    )
                )
            for j in range(2, last + 1):
                srcs = [e.src for e in cell.edges if e.dst == j]
                if len(set(srcs)) != len(srcs):
                    raise GenotypeError(
                        f"{where}: node {j} has the edge from node "
                        f"{next(x for x in srcs if srcs.count(x) > 1)} twice; each node takes "
                        f"{self.edges_per_node} inputs from different nodes"
                    )
                # FairDARTS's threshold derivation keeps single-input nodes; its cells (like
                # every derived cell) carry concat. A cell without concat is in the DARTS
                # paper's format: exactly two inputs per node.
                low = 1 if cell.concat is not None else self.edges_per_node
                if not low <= len(srcs) <= self.edges_per_node:
                    raise GenotypeError(
                        f"{where}: node {j} has {len(srcs)} input(s) {sorted(srcs)}; a darts "
                        f"node takes {self.edges_per_node} from different earlier nodes"
                        + (" (1 only in a cell with a concat list)" if low > 1 else "")
                    )
            dst_order = [e.dst for e in cell.edges]
            if dst_order != sorted(dst_order):
                raise GenotypeError(
                    f"{where}: list the edges in the order of their destination node "
                    f"(node 2's first), got destinations {dst_order}"
                )
            if cell.concat is not None and any(c < 0 or c > last for c in cell.concat):
                raise GenotypeError(
                    f"{where}: concat {list(cell.concat)} names a node outside 0..{last}"
                )
        for t in ("normal", "reduce"):
            if not genotype.cells_of(t):
                raise GenotypeError(f"darts genotype has no {t} cell")
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
        self.check_network(network, ("cifar", "imagenet"))
        stages = None
        if genotype.network is not None:
            if network != "cifar":
                raise ConfigError(
                    f"this genotype's network section describes a cifar network "
                    f"({genotype.network.to_json()}); build it with network 'cifar'"
                )
            if layers is None:  # explicit sizes override the genotype's own
                stages = genotype.network.stages
                layers = genotype.network.layers
            channels = channels or genotype.network.channels
        if network == "imagenet":
            from diffnas.spaces.darts_imagenet import DartsImageNetNetwork

            return DartsImageNetNetwork(
                genotype,
                channels or 48,
                num_classes,
                layers or 14,
                auxiliary,
                drop_path,
                in_channels,
            )
        return DartsNetwork(
            genotype,
            channels or 36,
            num_classes,
            layers or 20,
            auxiliary,
            drop_path,
            in_channels,
            stages=stages,
        )


# =========================================================================== supernet
class SearchCell(nn.Module):
    def __init__(
        self,
        space: DartsSpace,
        spec: ArchSpec,
        net: SupernetConfig,
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c, affine=False, track=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False, track=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False, track=False)
        n_nodes = 2 + space.cfg.nodes

        def make_op(name: str, channels: int, stride: int) -> nn.Module:
            return space.op_table[name].build(channels, stride, False, True)

        self.dag = SearchDAG(
            2,
            n_nodes,
            list(spec.edges),
            list(spec.ops),
            c,
            stride=lambda src: 2 if reduction and src < 2 else 1,
            make_op=make_op,
            partial_channels=net.partial_channels,
            node_bn=net.node_bn,
            aux_skip=net.aux_skip,
        )
        self.concat = list(range(2, n_nodes))

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        w: torch.Tensor,
        active=None,
        edge_scale=None,
        connect_none: bool = False,
    ) -> torch.Tensor:
        nodes = self.dag(
            [self.preprocess0(s0), self.preprocess1(s1)],
            w,
            active,
            edge_scale,
            connect_none=connect_none,
        )
        return torch.cat([nodes[i] for i in self.concat], dim=1)


class DartsSupernet(Supernet):
    def __init__(
        self,
        space: DartsSpace,
        net: SupernetConfig,
        in_channels: int,
        num_classes: int,
        input_size: int,
    ) -> None:
        super().__init__()
        cfg = space.cfg
        self.arch_specs = space.arch_specs()
        self.op_cost = space.op_cost
        c = cfg.channels
        c_curr = cfg.stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_curr, track_running_stats=False),
        )
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        self.keys = space.cell_keys()
        self.sites: list[CellSite] = []
        reduction_prev = False
        size = input_size
        for key, cell_type in zip(self.keys, space.cell_types()):
            reduction = cell_type == "reduce"
            if reduction:
                c_curr *= 2
            cell = SearchCell(
                space, self.arch_specs[key], net, c_pp, c_p, c_curr, reduction, reduction_prev
            )
            self.sites.append(CellSite(key, c_curr, size, size, reduction))
            if reduction:
                size = (size + 1) // 2
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cfg.nodes * c_curr
        self.classifier = nn.Linear(c_p, num_classes)
        self.set_layout()

    def forward(self, x: torch.Tensor, mix: MixWeights) -> torch.Tensor:
        s0 = s1 = self.stem(self.set_layout(x))
        edges = mix.edges
        for key, cell in zip(self.keys, self.cells):
            s0, s1 = (
                s1,
                cell(
                    s0,
                    s1,
                    mix.ops[key],
                    mix.active_for(key),
                    None if edges is None else edges[key],
                    mix.connect_none,
                ),
            )
        out = F.adaptive_avg_pool2d(s1, 1).flatten(1)
        return self.classifier(out)


# =========================================================================== discrete net
def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability drop_prob, rescale the rest (training only)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


def make_edge_op(edge: Edge, channels: int, stride: int, table: OpTable = DARTS_OPS) -> nn.Module:
    """The module of one genotype edge in a discrete network (an ACA edge when s > 0)."""
    return build_edge(table, edge, channels, stride)


def op_table_for(genotype: Genotype) -> OpTable:
    """The op table of the genotype's space (a plugin's space_with_ops: its own table)."""
    from diffnas.registry import SPACES

    if genotype.space in SPACES:
        table: OpTable = SPACES.get(genotype.space).op_table
        return table
    return DARTS_OPS


class Cell(nn.Module):
    def __init__(
        self,
        genotype: CellGenotype,
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        table: OpTable = DARTS_OPS,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.edges = [(e.src, e.dst) for e in genotype.edges]
        self.edge_specs = list(genotype.edges)  # aligned with self.ops (profile cross-checks)
        self.ops = nn.ModuleList(
            make_edge_op(e, c, 2 if reduction and e.src < 2 else 1, table) for e in genotype.edges
        )
        self.n_nodes = max(d for _, d in self.edges) + 1
        self.concat = list(genotype.concat) if genotype.concat else list(range(2, self.n_nodes))
        self.multiplier = len(self.concat)
        self.drop_prob = 0.0

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states: list[torch.Tensor | None] = [self.preprocess0(s0), self.preprocess1(s1)]
        states += [None] * (self.n_nodes - 2)
        drop = self.training and self.drop_prob > 0
        for (src, dst), op in zip(self.edges, self.ops):
            if drop and isinstance(op, ACAEdge):  # drop the op's channels, never identity's
                h = op(states[src], lambda t: drop_path(t, self.drop_prob))
            else:
                h = op(states[src])
                if drop and not isinstance(op, nn.Identity):
                    h = drop_path(h, self.drop_prob)
            states[dst] = h if states[dst] is None else states[dst] + h
        return torch.cat([states[i] for i in self.concat], dim=1)  # type: ignore[misc]


class AuxiliaryHead(nn.Module):
    """DARTS auxiliary classifier; expects the 8x8 map of CIFAR at 2/3 depth, adapts to others."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if x.shape[-1] >= 5:
            x = F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)
        x = F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


def stage_reductions(stages: tuple[int, ...]) -> set[int]:
    """Indices of the reduction cells of a network with `stages` normal cells per stage."""
    out, i = set(), 0
    for n in stages[:-1]:
        i += n
        out.add(i)
        i += 1
    return out


def network_cells(
    genotype: Genotype, layers: int, stages: tuple[int, ...] | None = None
) -> list[tuple[CellGenotype, bool]]:
    """(searched cell, is_reduction) for each of the `layers` cells of a discrete network.

    Reductions sit at 1/3 and 2/3 of depth, or between the given `stages` (normal cells per
    stage); per-stage searched cells are mapped to the normal cells of their stage by
    relative position (`Genotype.cell_for`).
    """
    reds = reduction_layers(layers) if stages is None else stage_reductions(stages)
    stage_sizes: list[int] = [0]  # normal cells per stage
    for i in range(layers):
        if i in reds:
            stage_sizes.append(0)
        else:
            stage_sizes[-1] += 1
    out = []
    stage, index_in_stage, reduction_index = 0, 0, 0
    for i in range(layers):
        if i in reds:
            out.append((genotype.cell_for("reduce", reduction_index), True))
            reduction_index += 1
            stage += 1
            index_in_stage = 0
        else:
            pos = index_in_stage / max(stage_sizes[stage], 1)
            out.append((genotype.cell_for("normal", stage, pos), False))
            index_in_stage += 1
    return out


class DartsNetwork(nn.Module):
    """The DARTS CIFAR network; per-cell genotypes map searched cells to depth by stage."""

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        drop_path_prob: float,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        stages: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if stages is not None:
            layers = sum(stages) + len(stages) - 1
        self.drop_path_prob = drop_path_prob
        self.aux_pos = 2 * layers // 3
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        c_aux = 0
        table = op_table_for(genotype)
        for i, (cell_g, reduction) in enumerate(network_cells(genotype, layers, stages)):
            if reduction:
                c_curr *= 2
            cell = Cell(cell_g, c_pp, c_p, c_curr, reduction, reduction_prev, table)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_pos:
                c_aux = c_p
        self.auxiliary = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            cell.drop_prob = self.drop_path_prob  # type: ignore[assignment]
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_pos and self.auxiliary is not None and self.training:
                aux_logits = self.auxiliary(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        if aux_logits is not None:
            return logits, aux_logits
        return logits
