"""ACA derivation: the base rule's ops and edges, plus a skip fraction per edge from channel importance.

At the search's end (`final=True`) one pass over the validation split with the supernet frozen
scores each chosen op's output channels (first-order Taylor) and gives the below-mean share to identity.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from diffnas.config import PartSpec
from diffnas.errors import ConfigError, DiffnasError
from diffnas.parts import Derivation, build_part
from diffnas.registry import DERIVATIONS
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.spaces.split_edge import accepts_skip_fraction, identity_channel_share
from diffnas.supernet.mixed import MixWeights
from diffnas.utils import atomic_write_text

if TYPE_CHECKING:
    from diffnas.parts import PartContext

SCORES = ("batch", "sample")
# (supernet cell index, α row, op index)
Slot = tuple[int, int, int]


# --------------------------------------------------------------------------- the two rules
def taylor_importance(y: torch.Tensor, grad: torch.Tensor, score: str = "batch") -> torch.Tensor:
    """First-order Taylor importance of each channel of an op output y [B, C, H, W] on one batch.

    grad = ∂L/∂y with L the batch's mean loss. 'batch': |Σ_{n,h,w} y·∂L/∂y| per channel, the
    first-order change of the batch loss if the channel were zeroed (docs/aca.md).
    'sample': Σ_n |Σ_{h,w} y·∂L/∂y|, the same per image before the absolute value (Molchanov
    et al. 2017), times B for the 1/B of the mean loss. The mean over batches is the caller's.
    """
    per_image = (y * grad).sum(dim=(2, 3))  # [B, C]
    if score == "batch":
        return per_image.sum(0).abs()
    if score == "sample":
        return per_image.abs().sum(0)
    raise ConfigError(f"ACA score must be one of {SCORES}, got '{score}'")


def below_mean_fraction(importance: torch.Tensor) -> float:
    """Allocation rule: the share of channels whose importance is below the mean of the op's."""
    return float((importance < importance.mean()).float().mean())


# --------------------------------------------------------------------------- the part
@DERIVATIONS.register("aca")
class AdaptiveChannelAllocation(Derivation):
    """The base derivation's genotype; at the end of the search, ACA skip fractions per edge."""

    @dataclass
    class Params:
        # the rule that chooses ops and edges (any registered derivation but aca)
        base: str = "default"
        base_params: dict[str, Any] = field(default_factory=dict)
        # 'batch' (docs/aca.md) or 'sample' (per-image Taylor scores, Molchanov et al.)
        score: str = "batch"
        # validation batches in the importance pass; 0 = the whole validation split
        max_batches: int = 0
        # build the space's default discrete network of the result, run it on two images and
        # record its parameter count with and without ACA in the genotype's info
        check_network: bool = True

        def __post_init__(self) -> None:
            if self.base == "aca":
                raise ConfigError("search.derive (aca): base must be another derivation, not aca")
            DERIVATIONS.get(self.base)
            if self.score not in SCORES:
                raise ConfigError(
                    f"search.derive (aca): score must be one of {', '.join(SCORES)}, "
                    f"got '{self.score}'"
                )
            if self.max_batches < 0:
                raise ConfigError(
                    f"search.derive (aca): max_batches must be >= 0 (0 = all), got {self.max_batches}"
                )

    params: Params
    # tells the NB201 lookup that final genotypes carry skip fractions it cannot score
    adds_skip_fractions = True

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params)
        p = self.params
        self.base: Derivation = build_part(
            DERIVATIONS, PartSpec(p.base, dict(p.base_params)), "search.derive.base"
        )

    # the base rule's state, metrics and setup are the derivation's own
    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    def metrics(self) -> dict[str, Any]:
        return self.base.metrics()

    def setup(self, searcher: PartContext) -> None:
        self.base.setup(searcher)
        if "skip_connect" in searcher.space.ops:
            warnings.warn(
                "ACA searches without skip connections, but skip_connect is in the op set; "
                "add space.exclude_ops=[skip_connect] (the aca preset does)",
                stacklevel=2,
            )

    def derive(self, s: PartContext, final: bool = False) -> Genotype:
        genotype = self.base.derive(s, final)
        if not final:  # per-epoch genotypes: the base rule only (cheap)
            return genotype
        return self.allocate(s, genotype)

    # ------------------------------------------------------------------ final derivation
    def allocate(self, s: PartContext, genotype: Genotype) -> Genotype:
        keys = self._cell_keys(s, genotype)
        sites = s.model.sites
        slots: dict[Slot, None] = {}
        for i, site in enumerate(sites):
            spec = s.model.arch_specs[site.key]
            cell = genotype.cells[keys.index(site.key)]
            for e in cell.edges:
                if accepts_skip_fraction(e.op) and e.op in spec.ops:
                    slots[(i, spec.edges.index((e.src, e.dst)), spec.ops.index(e.op))] = None
        importance, n_batches = self.importance(s, list(slots))

        # per supernet cell: share of below-mean channels; per edge: mean over the cells
        # that share the edge's α (e.g. NB201's 15 cells, DARTS' 6 normal cells)
        fractions: dict[tuple[str, int, int], list[float]] = {}
        for (i, row, o), imp in importance.items():
            fractions.setdefault((sites[i].key, row, o), []).append(below_mean_fraction(imp))
        cells = []
        for key, cell in zip(keys, genotype.cells):
            spec = s.model.arch_specs[key]
            edges = []
            for e in cell.edges:
                f = fractions.get((key, spec.edges.index((e.src, e.dst)), _op_index(spec, e.op)))
                skip = sum(f) / len(f) if f else 0.0
                edges.append(Edge(e.op, e.src, e.dst, round(skip, 6)))
            cells.append(CellGenotype(cell.type, tuple(edges), cell.stage, cell.concat))
        out = Genotype(genotype.space, tuple(cells), genotype.name, dict(genotype.info))
        s.space.validate(out)

        all_edges = [e for c in out.cells for e in c.edges]
        shares = [e.skip_fraction for e in all_edges if accepts_skip_fraction(e.op)]
        info: dict[str, Any] = {
            "score": self.params.score,
            "val_batches": n_batches,
            "mean_skip_fraction": round(sum(shares) / len(shares), 4) if shares else 0.0,
            "param_free_share": round(s.space.param_free_share(out), 4),
            "identity_channel_share": round(
                identity_channel_share(all_edges, s.space.parameter_free), 4
            ),
        }
        if self.params.check_network:
            info.update(self._network_check(s, out, genotype))
        out.info["aca"] = info
        if s.run is not None:
            self._save_importance(s, importance, keys)
        return out

    def importance(self, s: PartContext, slots: list[Slot]) -> tuple[dict[Slot, torch.Tensor], int]:
        """Mean Taylor importance per channel of each slot's op output over the validation split.

        The supernet runs with the relaxation's deterministic weights and every op computed
        (so that the chosen op always is, whatever the relaxation samples); nothing is updated:
        gradients are taken w.r.t. the captured op outputs only.
        """
        capturers: list[Any] = [  # every SearchDAG (its public capture hook), in cell order
            m
            for m in s.model.modules()
            if callable(getattr(m, "start_capture", None))
            and callable(getattr(m, "stop_capture", None))
        ]
        if len(capturers) != len(s.model.sites):
            raise DiffnasError(
                f"ACA: the supernet has {len(capturers)} capturing cells for "
                f"{len(s.model.sites)} cell sites; cannot map op outputs to cells"
            )
        weights = s.relaxation.derivation_weights(s.arch)
        edge_w = s.arch.edge_weights()
        if edge_w is not None:
            edge_w = {k: v.detach() for k, v in edge_w.items()}
        mix = MixWeights(weights, None, edge_w)
        sums: dict[Slot, torch.Tensor] = {}
        n = 0
        limit = self.params.max_batches or len(s.data.val)
        for x, labels in s.data.val.epoch(0):
            if n >= limit:
                break
            for c in capturers:
                c.start_capture()
            try:
                with torch.enable_grad():
                    logits = s.forward(x, mix)
            finally:
                captured = [c.stop_capture() for c in capturers]
            ys = []
            for i, row, o in slots:
                y = captured[i].get((row, o))
                if y is None:
                    raise DiffnasError(
                        f"ACA: the supernet did not compute op {o} of edge {row} in cell {i}"
                    )
                ys.append(y)
            loss = F.cross_entropy(logits, labels)
            grads = torch.autograd.grad(loss, ys, allow_unused=True) if ys else ()
            for slot, y, g in zip(slots, ys, grads):
                score = (
                    taylor_importance(y.detach(), g, self.params.score)
                    if g is not None
                    else y.new_zeros(y.shape[1])
                )
                sums[slot] = sums[slot] + score if slot in sums else score
            n += 1
        return {k: (v / max(n, 1)).cpu() for k, v in sums.items()}, n

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _cell_keys(s: PartContext, genotype: Genotype) -> list[str]:
        """The α key of each genotype cell (a space derives one cell per key, in order)."""
        specs = list(s.model.arch_specs.values())
        if len(specs) != len(genotype.cells) or any(
            c.type != spec.cell_type or c.stage != spec.stage
            for c, spec in zip(genotype.cells, specs)
        ):
            raise DiffnasError(
                f"ACA: the base derivation '{type(s.derivation).__name__}' gave cells that do not "
                f"match the supernet's architecture keys ({', '.join(spec.key for spec in specs)})"
            )
        return [spec.key for spec in specs]

    @staticmethod
    def _network_check(s: PartContext, aca: Genotype, plain: Genotype) -> dict[str, Any]:
        """Build the default discrete network of both genotypes; run the ACA one on 2 images."""
        ds = s.data.dataset
        net = s.space.build_network(aca, num_classes=ds.num_classes, in_channels=ds.in_channels)
        base_net = s.space.build_network(
            plain, num_classes=ds.num_classes, in_channels=ds.in_channels
        )
        x = s.data.val.batch(s.data.val.order(0), 0, 0)[0][:2].cpu()
        net.eval()
        with torch.no_grad():
            out = net(x)
        if not bool(torch.isfinite(out).all()):
            raise DiffnasError(
                "ACA: the discrete network of the derived genotype gives non-finite output"
            )
        return {
            "eval_params": sum(p.numel() for p in net.parameters()),
            "eval_params_without_aca": sum(p.numel() for p in base_net.parameters()),
        }

    @staticmethod
    def _save_importance(
        s: PartContext, importance: dict[Slot, torch.Tensor], keys: list[str]
    ) -> None:
        """aca_importance.json in the run directory: every scored channel, per cell and edge."""
        assert s.run is not None
        records = []
        for (i, row, o), imp in sorted(importance.items()):
            site = s.model.sites[i]
            spec = s.model.arch_specs[site.key]
            src, dst = spec.edges[row]
            records.append(
                {
                    "cell": i,
                    "key": site.key,
                    "edge": [src, dst],
                    "op": spec.ops[o],
                    "skip_fraction": below_mean_fraction(imp),
                    "importance": [float(f"{v:.6g}") for v in imp.tolist()],
                }
            )
        atomic_write_text(s.run.path / "aca_importance.json", json.dumps(records, indent=1) + "\n")


def _op_index(spec: Any, op: str) -> int:
    return spec.ops.index(op) if op in spec.ops else -1
