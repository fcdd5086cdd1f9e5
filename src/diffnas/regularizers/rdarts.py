"""RDARTS (Wang et al., IEEE ESL 2022): the Reg distance between same-type searched cells.

Reg = mean over same-type cell pairs of an op-distribution distance plus a resource term on
the cells' expected parameter costs, weighted adaptively (share rule or dual ascent).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import torch

from diffnas.errors import ConfigError
from diffnas.loop import Mean
from diffnas.parts import RegContext, Regularizer
from diffnas.registry import REGULARIZERS

if TYPE_CHECKING:
    from diffnas.parts import PartContext

DISTANCES = ("l2", "js")
WIDTHS = ("reference", "actual")
WEIGHTS = ("share", "dual", "fixed")
PROBS = ("relaxation", "softmax")


def _choice(value: str, accepted: tuple[str, ...], name: str) -> None:
    if value not in accepted:
        raise ConfigError(
            f"search.regularizers (rdarts): {name} must be one of {', '.join(accepted)}, "
            f"got '{value}'"
        )


# --------------------------------------------------------------------------- the formulas
def op_distance(p: torch.Tensor, q: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean over edges of the distance between two cells' op distributions [E, O].

    l2: ‖p(e) − q(e)‖²; js: Jensen–Shannon divergence (natural log, at most ln 2).
    """
    if kind == "l2":
        return ((p - q) ** 2).sum(dim=-1).mean()
    if kind == "js":
        m = 0.5 * (p + q)
        tiny = torch.finfo(p.dtype).tiny

        def kl(a: torch.Tensor) -> torch.Tensor:
            # a·log(a/m) with 0·log 0 = 0 (CRB-like relaxations give exact zeros)
            return (a * (a.clamp_min(tiny).log() - m.clamp_min(tiny).log())).sum(dim=-1)

        return (0.5 * kl(p) + 0.5 * kl(q)).mean()
    raise ConfigError(f"unknown op distance '{kind}'; accepted: {', '.join(DISTANCES)}")


@dataclass
class RegTerms:
    reg: torch.Tensor  # mean over pairs of d + r (differentiable)
    d: torch.Tensor  # mean over pairs of the op distance
    r: torch.Tensor  # mean over pairs of the resource term (0 when off)
    costs: dict[str, torch.Tensor]  # each cell's expected cost (empty when off)


def reg_distance(
    probs: dict[str, torch.Tensor],
    groups: list[list[str]],
    tables: dict[str, torch.Tensor] | None,
    distance: str = "l2",
) -> RegTerms:
    """Reg = mean over same-type pairs (i, j) of d(i, j) + (c_i − c_j)² / c̄².

    `groups`: the α keys of each cell type (pairs are formed inside a group). `tables`:
    per key the cost of each (edge, op), so that c_k = Σ p_k · table_k (None: no resource
    term). c̄ is the mean cost of the group's cells, detached: a normalizer that makes the
    term scale-free, not a quantity to optimize (its gradient would push every cost up).
    """
    d_terms: list[torch.Tensor] = []
    r_terms: list[torch.Tensor] = []
    costs: dict[str, torch.Tensor] = {}
    for keys in groups:
        if tables is not None:
            c = torch.stack([(probs[k] * tables[k]).sum() for k in keys])
            costs.update(zip(keys, c))
            # at least one parameter: a group of parameter-free cells gives r = 0, not NaN
            c_bar = c.detach().mean().clamp_min(1.0)
        for a, b in combinations(range(len(keys)), 2):
            d_terms.append(op_distance(probs[keys[a]], probs[keys[b]], distance))
            if tables is not None:
                r_terms.append((c[a] - c[b]) ** 2 / c_bar**2)
    if not d_terms:
        raise ConfigError("the Reg distance needs at least two cells of the same type")
    d = torch.stack(d_terms).mean()
    r = torch.stack(r_terms).mean() if r_terms else torch.zeros_like(d)
    return RegTerms(d + r, d, r, costs)


# --------------------------------------------------------------------------- the part
@REGULARIZERS.register("rdarts")
class RdartsReg(Regularizer):
    """L_val += λ_t · Reg over the searched cells of each type (space.cells, e.g. NRNRN).

    Our interpretation of the paper (docs/rdarts.md; the [ours] parts are options here):
    the l2/js distance, the resource term, the share rule λ_t = ρ·CE_t/Reg_t and the dual
    ascent alternative. Logs per epoch: Reg, d, r, λ and each cell's expected parameters.
    """

    @dataclass
    class Params:
        # op-distribution distance between two cells: l2 (squared, per edge) or js
        distance: str = "l2"
        # add the resource term (c_i − c_j)² / c̄² on the cells' expected parameter costs
        resource: bool = True
        # width at which the resource term counts a cell's parameters: `reference` (every
        # cell at the supernet's base width space.channels, so the term compares op choices)
        # or `actual` (each cell at its own stage width: deeper cells cost ~4x per stage)
        resource_width: str = "reference"
        # λ rule: share (λ = ρ·CE/Reg, both detached), dual (λ ← max(0, λ + η(Reg − τ))
        # after each architecture step) or fixed (λ = lam throughout; lam=0: logging only)
        weight: str = "share"
        rho: float = 0.1
        # share: λ = ρ·CE / max(Reg, min_reg); cells that start identical (α ~ 1e-3 noise)
        # would otherwise get λ ~ 1e6 and a gradient ρ·CE·∇log Reg that swamps the CE's
        min_reg: float = 1e-3
        eta: float = 1.0  # dual: step size on λ
        tau: float = 0.01  # dual: target value of Reg
        lam: float = 0.0  # dual: initial λ; fixed: the constant λ
        # op distributions compared: the relaxation's deterministic weights normalized per
        # edge (= softmax(α) for softmax; also fits sigmoid/clamp relaxations) or softmax(α)
        probs: str = "relaxation"

        def __post_init__(self) -> None:
            _choice(self.distance, DISTANCES, "distance")
            _choice(self.resource_width, WIDTHS, "resource_width")
            _choice(self.weight, WEIGHTS, "weight")
            _choice(self.probs, PROBS, "probs")
            for name in ("rho", "min_reg", "eta", "lam"):
                if getattr(self, name) < 0:
                    raise ConfigError(
                        f"search.regularizers (rdarts): {name} must be >= 0, got {getattr(self, name)}"
                    )
            if self.min_reg <= 0 and self.weight == "share":
                raise ConfigError(
                    "search.regularizers (rdarts): min_reg must be > 0 with weight: share"
                )

    params: Params

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        # dual/fixed; share recomputes it every step. dual keeps it on the device once it has
        # moved (a tensor: no read of Reg per step), a float until then
        self.lam: float | torch.Tensor = float(self.params.lam)
        self.groups: list[list[str]] = []
        self.tables: dict[str, torch.Tensor] | None = None
        self.ref_tables: dict[str, torch.Tensor] = {}
        self.actual_tables: dict[str, torch.Tensor] = {}
        self._searcher: PartContext | None = None
        self._last_reg: float | torch.Tensor = 0.0
        # the epoch's means of Reg, d, r and λ over its architecture steps
        self._means = {name: Mean() for name in ("reg", "d", "r", "lam")}
        self._sum_epoch = -1

    # ------------------------------------------------------------------ setup
    def setup(self, searcher: PartContext) -> None:
        self._searcher = searcher
        specs = searcher.arch.specs
        by_type: dict[str, list[str]] = {}
        for key, spec in specs.items():
            by_type.setdefault(spec.cell_type, []).append(key)
        self.groups = [keys for keys in by_type.values() if len(keys) >= 2]
        if not self.groups:
            raise ConfigError(
                f"regularizer rdarts compares searched cells of the same type, but this "
                f"{searcher.space.name} supernet has one α per type ({', '.join(specs)}); use the "
                f"darts space with per-cell α, e.g. --set space.cells=NRNRN (configs/rdarts.yaml), "
                f"or per-stage α on nb201: --set space.cells=NNN"
            )
        for keys in self.groups:
            shapes = {specs[k].shape for k in keys}
            if len(shapes) > 1:
                raise ConfigError(f"rdarts: cells {keys} have α of different shapes {shapes}")
        device = searcher.device
        model = searcher.model
        self.actual_tables = {k: t.to(device) for k, t in model.cost_tables("params").items()}
        ref = model.cost_tables("params", channels=searcher.space.cfg.channels)
        self.ref_tables = {k: t.to(device) for k, t in ref.items()}
        if self.params.resource:
            wide = self.params.resource_width == "actual"
            self.tables = self.actual_tables if wide else self.ref_tables

    # ------------------------------------------------------------------ the loss term
    def cell_probs(self, searcher: PartContext, arch: Any) -> dict[str, torch.Tensor]:
        """Each cell's op distribution per edge [E, O] (differentiable in α)."""
        out = {}
        compared = {k for keys in self.groups for k in keys}
        for k, alpha in arch.alpha.items():
            if k in compared:
                if self.params.probs == "softmax":
                    out[k] = torch.softmax(alpha, dim=-1)
                else:
                    w = searcher.relaxation.probs(alpha, k)
                    out[k] = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return out

    def terms(self, searcher: PartContext, arch: Any) -> RegTerms:
        return reg_distance(
            self.cell_probs(searcher, arch), self.groups, self.tables, self.params.distance
        )

    def weight(self, ce: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        """λ_t for this step (a constant: no gradient flows through it)."""
        if self.params.weight == "share":
            return (self.params.rho * ce / reg.clamp_min(self.params.min_reg)).detach()
        return torch.as_tensor(self.lam, dtype=reg.dtype, device=reg.device)

    def loss(self, ctx: RegContext) -> torch.Tensor:
        t = self.terms(ctx.searcher, ctx.arch)
        lam = self.weight(ctx.ce.detach(), t.reg.detach())
        self._last_reg = t.reg.detach()  # on the device: dual's λ update reads nothing
        self._accumulate(ctx.searcher.epoch, t, lam)
        return lam * t.reg

    def after_arch_step(self, arch: Any) -> None:
        if self.params.weight == "dual":
            p = self.params
            lam = self.lam + p.eta * (self._last_reg - p.tau)
            self.lam = lam.clamp_min(0.0) if isinstance(lam, torch.Tensor) else max(0.0, lam)

    # ------------------------------------------------------------------ logging and state
    def _accumulate(self, epoch: int, t: RegTerms, lam: torch.Tensor) -> None:
        if epoch != self._sum_epoch:
            for m in self._means.values():
                m.reset()
            self._sum_epoch = epoch
        for name, value in (("reg", t.reg), ("d", t.d), ("r", t.r), ("lam", lam)):
            self._means[name].add(value)  # on the device: read once, in metrics()

    def expected_costs(self, tables: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each cell's expected parameter count under the current op distributions."""
        s = self._searcher
        if s is None:
            return {}
        with torch.no_grad():
            probs = self.cell_probs(s, s.arch)
            return {k: round(float((p * tables[k]).sum()), 1) for k, p in probs.items()}

    def metrics(self) -> dict[str, Any]:
        s = self._searcher
        out: dict[str, Any] = {}
        if s is not None and self._sum_epoch == s.epoch and self._means["reg"].n:
            for name, mean in self._means.items():
                out["lambda" if name == "lam" else name] = mean.value()
        else:  # no architecture step this epoch (e.g. warm-up)
            out.update(dict.fromkeys(("reg", "d", "r"), None))
            out["lambda"] = None if self.params.weight == "share" else float(self.lam)
        # expected parameters at each cell's own width, and at the common reference width
        out["cost"] = self.expected_costs(self.actual_tables)
        out["cost_ref"] = self.expected_costs(self.ref_tables)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "lam": float(self.lam),
            "last_reg": float(self._last_reg),
            "sums": {"n": float(self._means["reg"].n)}
            | {k: m.total() for k, m in self._means.items()},
            "sum_epoch": self._sum_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lam"])
        self._last_reg = float(state["last_reg"])
        sums = state["sums"]
        for name, mean in self._means.items():
            if sums.get("n"):
                mean.load_state_dict({"sum": sums[name], "n": sums["n"]})
            else:
                mean.reset()
        self._sum_epoch = int(state["sum_epoch"])
