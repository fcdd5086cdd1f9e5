"""Searchable choices inside any user `nn.Module`, and the space that searches them.

`MixedChoice` (one of several candidate modules) and `InputChoice` (k of n inputs) can sit
anywhere in a user's model. `ModelSpace` collects them (one α row per label: choices
sharing a label share the decision), hands the searcher a supernet that mixes every choice
with the op weights of the configured relaxation, derives {label: chosen} (argmax per
MixedChoice, top-k per InputChoice), and `fix` turns the model into a plain `nn.Module`
with every choice replaced by what was chosen.

Inside the search loop a user model's architecture is a `Genotype` of the space 'model'
(or the name a plugin registered): one cell per label, in the order the choices first
appear in the model, whose edges `[chosen, 0, 1]` name the chosen candidate(s).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from diffnas.config import SpaceConfig, SupernetConfig
from diffnas.errors import ConfigError, GenotypeError
from diffnas.spaces.base import Space
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype
from diffnas.supernet.base import ArchSpec, CellSite, Supernet
from diffnas.supernet.mixed import MixWeights

MODEL_SPACE = "model"
CHOICES_FILE = "choices.json"  # {label: chosen} in a search run of a user model

# parts that read a built-in space's cell layout, cost-per-site or latency tables
UNSUPPORTED_PARTS = {
    "regularizer": {
        "latency": "it needs a latency table of the darts/nb201 ops",
        "rdarts": "it scales its penalty by the darts/nb201 cells' per-stage cost tables",
    },
    "derivation": {
        "aca": "it allocates channels of darts cells (skip fraction per cell edge)",
        "random_search": "it samples genotypes of the built-in cell spaces",
    },
}


class _Choice(nn.Module):
    """What both choices share: a label, candidate names, and the weights of this step."""

    label: str | None
    names: tuple[str, ...]

    def __init__(self, names: Sequence[str], label: str | None) -> None:
        super().__init__()
        if label is not None and (not isinstance(label, str) or not label):
            raise ConfigError(f"a choice label must be a non-empty string, got {label!r}")
        self.label = label
        self.names = tuple(names)
        self._w: torch.Tensor | None = None
        self._active: list[int] | None = None
        self._scale: torch.Tensor | None = None

    def _set(self, w: torch.Tensor | None, active: list[int] | None, scale: Any) -> None:
        self._w, self._active, self._scale = w, active, scale

    def _weights(self) -> torch.Tensor:
        if self._w is None:
            kind = type(self).__name__
            raise ConfigError(
                f"{kind} {self.label!r} has no architecture weights: call the model inside "
                f"diffnas.search, or fix its choices first with diffnas.choices.fix(model, "
                f"choices)"
            )
        return self._w

    def _computed(self) -> list[int]:
        return list(range(len(self.names))) if self._active is None else self._active

    def _finish(self, acc: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if acc is None:  # nothing computed (every candidate pruned): a zero output
            acc = torch.zeros_like(like)
        return acc if self._scale is None else acc * self._scale


def _candidate_names(candidates: Sequence[nn.Module]) -> list[str]:
    names: list[str] = []
    for m in candidates:
        base = type(m).__name__.lower()
        name, i = base, 1
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


class MixedChoice(_Choice):
    """One of several candidate modules, weighted by α through the configured relaxation.

    candidates: {name: module} or a list of modules (named after their class); every
    candidate takes the same inputs and returns tensors of one shape. During a search the
    output is Σ_o w_o · candidate_o(*args) over the candidates the relaxation computes
    (GDAS: the sampled one; CRB: the unpruned ones); `fix` replaces it by the chosen module.
    label: the decision's name (choices with the same label share one decision);
    default: the module's path in the model.
    """

    def __init__(
        self, candidates: Mapping[str, nn.Module] | Sequence[nn.Module], label: str | None = None
    ) -> None:
        if isinstance(candidates, Mapping):
            names = [str(k) for k in candidates]
            modules = list(candidates.values())
        elif isinstance(candidates, Sequence) and not isinstance(candidates, str):
            modules = list(candidates)
            names = _candidate_names(modules)
        else:
            raise ConfigError(
                f"MixedChoice takes a dict {{name: module}} or a list of modules, got "
                f"{type(candidates).__name__}"
            )
        if len(modules) < 2:
            raise ConfigError(
                f"MixedChoice {label!r} needs at least 2 candidates, got {len(modules)}"
            )
        for name, m in zip(names, modules):
            if not isinstance(m, nn.Module):
                raise ConfigError(
                    f"MixedChoice {label!r}: candidate '{name}' is a {type(m).__name__}, not an "
                    f"nn.Module"
                )
        super().__init__(names, label)
        # ModuleDict keys may not contain dots
        self.candidates = nn.ModuleList(modules)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        w = self._weights()
        acc: torch.Tensor | None = None
        y: torch.Tensor | None = None
        for o in self._computed():
            y = self.candidates[o](*args, **kwargs)
            acc = y * w[o] if acc is None else torch.addcmul(acc, y, w[o])
        if acc is None:
            y = self.candidates[0](*args, **kwargs)
        assert y is not None
        return self._finish(acc, y)


class InputChoice(_Choice):
    """k of n inputs, summed: forward(inputs) takes a list of n tensors of one shape.

    During a search the output is Σ_i w_i · inputs[i]; derivation keeps the `n_chosen`
    inputs with the largest weights and `fix` replaces it by their plain sum.
    """

    def __init__(self, n_inputs: int, n_chosen: int = 1, label: str | None = None) -> None:
        if n_inputs < 2 or not 1 <= n_chosen <= n_inputs:
            raise ConfigError(
                f"InputChoice {label!r} needs n_inputs >= 2 and 1 <= n_chosen <= n_inputs, got "
                f"n_inputs={n_inputs}, n_chosen={n_chosen}"
            )
        super().__init__([str(i) for i in range(n_inputs)], label)
        self.n_inputs = n_inputs
        self.n_chosen = n_chosen

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != self.n_inputs:
            raise ConfigError(
                f"InputChoice {self.label!r} was built for {self.n_inputs} inputs, got "
                f"{len(inputs)}"
            )
        w = self._weights()
        acc: torch.Tensor | None = None
        for i in self._computed():
            acc = inputs[i] * w[i] if acc is None else torch.addcmul(acc, inputs[i], w[i])
        return self._finish(acc, inputs[0])


class ChosenInputs(nn.Module):
    """The fixed form of an InputChoice: the sum of the chosen inputs."""

    def __init__(self, indices: Sequence[int]) -> None:
        super().__init__()
        self.indices = [int(i) for i in indices]

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        out = inputs[self.indices[0]]
        for i in self.indices[1:]:
            out = out + inputs[i]
        return out


# =========================================================================== collecting
def choices_of(model: nn.Module) -> dict[str, list[tuple[str, _Choice]]]:
    """label -> [(module path, choice)], labels in the order they first appear.

    An unlabelled choice is labelled by its path. Choices sharing a label must have the same
    candidate names (they share one decision). Choices nested in a candidate are refused.
    """
    found: dict[str, list[tuple[str, _Choice]]] = {}
    for path, m in model.named_modules():
        if not isinstance(m, _Choice):
            continue
        inner = [p for p, sub in m.named_modules() if p and isinstance(sub, _Choice)]
        if inner:
            raise ConfigError(
                f"choice '{path}' holds another choice ('{path}.{inner[0]}'); nested choices "
                f"are not supported: give the inner decision its own place in the model"
            )
        label = m.label or path or "choice"
        same = found.setdefault(label, [])
        if same and (same[0][1].names != m.names or type(same[0][1]) is not type(m)):
            raise ConfigError(
                f"choices '{same[0][0]}' and '{path}' share the label '{label}' but offer "
                f"different candidates ({', '.join(same[0][1].names)} vs {', '.join(m.names)}); "
                f"give them different labels"
            )
        same.append((path, m))
    return found


class ModelSupernet(Supernet):
    """The user's model as a supernet: forward(x, mix) sets each choice's weights, calls it."""

    def __init__(self, net: nn.Module, labels: dict[str, list[tuple[str, _Choice]]]) -> None:
        super().__init__()
        self.net = net
        self.labels = {k: [c for _, c in v] for k, v in labels.items()}
        self.arch_specs = {k: _spec(k, v[0][1]) for k, v in labels.items()}
        self.sites: list[CellSite] = []
        self.memory_format = torch.contiguous_format

    def forward(self, x: Any, mix: MixWeights) -> Any:
        edges = mix.edges
        for key, choices in self.labels.items():
            active = mix.active_for(key)
            for c in choices:
                c._set(
                    mix.ops[key][0],
                    None if active is None else active[0],
                    None if edges is None else edges[key][0],
                )
        try:
            return self.net(x)
        finally:
            for choices in self.labels.values():
                for c in choices:
                    c._set(None, None, None)

    def cost_tables(
        self, metric: str = "params", channels: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Parameters of each candidate (summed over the choices sharing a label)."""
        if metric != "params" or channels is not None:
            raise ConfigError(
                f"a user model has cost tables of metric 'params' only (each candidate's "
                f"parameter count), not '{metric}'{' at a common width' if channels else ''}; "
                f"set the part's metric to params"
            )
        out = {}
        for key, choices in self.labels.items():
            row = torch.zeros(1, len(choices[0].names))
            for c in choices:
                if isinstance(c, MixedChoice):
                    for o, m in enumerate(c.candidates):
                        row[0, o] += sum(p.numel() for p in m.parameters())
            out[key] = row
        return out


def _spec(key: str, choice: _Choice) -> ArchSpec:
    return ArchSpec(key, "normal", None, ((0, 1),), choice.names, 1)


class ModelSpace(Space):
    """The search space of one user model: its choices, their derivation and `fix`."""

    name = MODEL_SPACE
    edges_per_node = None
    default_layers = 0
    # one sample's shape without the batch axis (registered models: for `diffnas export`)
    input_shape: tuple[int, ...] | None = None

    def __init__(
        self,
        model: nn.Module | None = None,
        cfg: SpaceConfig | None = None,
        *,
        factory: Callable[[], nn.Module] | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or type(self).name  # type: ignore[misc]
        self.cfg = cfg or SpaceConfig(name=self.name)
        self.factory = factory
        if model is None:
            if factory is None:
                raise ConfigError("ModelSpace needs a model or a factory")
            model = factory()
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"a searched model must be a torch.nn.Module, got {type(model).__name__}"
            )
        self.model = model
        self.labels = choices_of(model)
        if not self.labels:
            raise ConfigError(
                f"{type(model).__name__} has no MixedChoice or InputChoice; put "
                f"diffnas.choices.MixedChoice / InputChoice where the model should choose"
            )
        if self.cfg.exclude_ops:
            raise ConfigError(
                "space.exclude_ops does not apply to a user model: leave the candidate out of "
                "its MixedChoice instead"
            )
        self.ops = []

    # ------------------------------------------------------------------ search side
    def arch_specs(self) -> dict[str, ArchSpec]:
        return {k: _spec(k, v[0][1]) for k, v in self.labels.items()}

    def build_supernet(
        self, net: SupernetConfig, in_channels: int, num_classes: int, input_size: int
    ) -> Supernet:
        if net.partial_channels != 1 or net.node_bn or net.aux_skip:
            raise ConfigError(
                "supernet.partial_channels, supernet.node_bn and supernet.aux_skip reshape the "
                "built-in cells and do not apply to a user model; set them to 1 / false "
                "(edge_norm is fine)"
            )
        return ModelSupernet(self.model, self.labels)

    def derive(
        self, weights: dict[str, torch.Tensor], edge_weights: dict[str, torch.Tensor] | None = None
    ) -> Genotype:
        del edge_weights  # one edge per choice: its normalized weight is 1
        cells = []
        chosen: dict[str, Any] = {}
        for key, choices in self.labels.items():
            w = weights[key].detach().float().cpu()[0]
            first = choices[0][1]
            if isinstance(first, InputChoice):
                # stable: ties go to the lower input index
                order = sorted(range(len(w)), key=lambda i: (-float(w[i]), i))
                picked = sorted(order[: first.n_chosen])
                chosen[key] = picked
                edges = tuple(Edge(str(i), 0, 1) for i in picked)
            else:
                best = max(range(len(w)), key=lambda o: (float(w[o]), -o))
                chosen[key] = first.names[best]
                edges = (Edge(first.names[best], 0, 1),)
            cells.append(CellGenotype("normal", edges))
        return Genotype(self.name, tuple(cells), info={"choices": chosen})

    def choices(self, genotype: Genotype) -> dict[str, Any]:
        """{label: chosen candidate name (MixedChoice) or input indices (InputChoice)}."""
        self.validate(genotype)
        out: dict[str, Any] = {}
        for (key, choices), cell in zip(self.labels.items(), genotype.cells):
            if isinstance(choices[0][1], InputChoice):
                out[key] = sorted(int(e.op) for e in cell.edges)
            else:
                out[key] = cell.edges[0].op
        return out

    def check_config(self, config: Any) -> None:
        """Refuse parts that do not work on a user model (see UNSUPPORTED_PARTS)."""
        check_parts(config, self)

    def save_choices(self, genotype: Genotype, run_dir: Any) -> None:
        """choices.json in a run directory: {label: chosen}."""
        import json
        from pathlib import Path

        from diffnas.utils import atomic_write_text

        text = json.dumps(self.choices(genotype), indent=2) + "\n"
        atomic_write_text(Path(run_dir) / CHOICES_FILE, text)

    def validate(self, genotype: Genotype) -> Genotype:
        self.check_space(genotype)
        if len(genotype.cells) != len(self.labels):
            raise GenotypeError(
                f"genotype has {len(genotype.cells)} cell(s) but the model '{self.name}' has "
                f"{len(self.labels)} choice(s) ({', '.join(self.labels)})"
            )
        for (key, choices), cell in zip(self.labels.items(), genotype.cells):
            first = choices[0][1]
            for e in cell.edges:
                if e.op not in first.names:
                    raise GenotypeError(
                        f"choice '{key}': '{e.op}' is not one of its candidates "
                        f"({', '.join(first.names)})"
                    )
            want = first.n_chosen if isinstance(first, InputChoice) else 1
            if len(cell.edges) != want:
                raise GenotypeError(f"choice '{key}' needs {want} chosen, got {len(cell.edges)}")
        return genotype

    def build_network(
        self,
        genotype: Genotype,
        *,
        num_classes: int = 0,
        in_channels: int = 3,
        channels: int | None = None,
        layers: int | None = None,
        auxiliary: bool = False,
        drop_path: float = 0.0,
        network: str = "cifar",
    ) -> nn.Module:
        """A fresh model (from the factory, else a copy of this one) with the choices fixed."""
        del num_classes, in_channels, channels, layers, auxiliary, drop_path, network
        base = self.factory() if self.factory is not None else self.model
        return fix(base, self.choices(genotype))

    def param_free_share(self, genotype: Genotype) -> float:
        """Share of the chosen candidates that have no parameters."""
        flags: list[bool] = []
        for (_, choices), cell in zip(self.labels.items(), genotype.cells):
            first = choices[0][1]
            if isinstance(first, MixedChoice):
                m = first.candidates[first.names.index(cell.edges[0].op)]
                flags.append(not any(True for _ in m.parameters()))
        return sum(flags) / len(flags) if flags else 0.0

    def parameter_free(self, op: str) -> bool:
        return False

    def op_cost(self, metric: str, op: str, channels: int, stride: int, h: int, w: int) -> int:
        raise ConfigError("a user model has no per-op cost table; use cost metric 'params'")


# =========================================================================== fixing
def _resolve(model: nn.Module, choices: Mapping[str, Any] | Genotype) -> dict[str, Any]:
    if isinstance(choices, Genotype):
        return ModelSpace(model, name=choices.space).choices(choices)
    return dict(choices)


def fix(model: nn.Module, choices: Mapping[str, Any] | Genotype) -> nn.Module:
    """A copy of `model` with every choice replaced by its chosen module: a plain nn.Module.

    choices: {label: candidate name} for each MixedChoice and {label: [input indices]} for
    each InputChoice (what `result.choices` holds), or a genotype of the model. The copy
    keeps the model's current weights (a searched supernet's trained candidates).
    """
    chosen = _resolve(model, choices)
    labels = choices_of(model)
    missing = [k for k in labels if k not in chosen]
    unknown = [k for k in chosen if k not in labels]
    if missing or unknown:
        raise GenotypeError(
            f"fix: choices do not match the model ({'missing: ' + ', '.join(missing) if missing else ''}"
            f"{'; ' if missing and unknown else ''}{'unknown: ' + ', '.join(unknown) if unknown else ''}); "
            f"its labels: {', '.join(labels)}"
        )
    out = copy.deepcopy(model)
    paths = {path: label for label, items in labels.items() for path, _ in items}
    if "" in paths:
        raise ConfigError("fix: the model itself is a choice; wrap it in a module")
    for path, label in paths.items():
        choice = out.get_submodule(path)
        value = chosen[label]
        new: nn.Module
        if isinstance(choice, MixedChoice):
            if value not in choice.names:
                raise GenotypeError(
                    f"fix: choice '{label}' has no candidate '{value}'; its candidates: "
                    f"{', '.join(choice.names)}"
                )
            new = choice.candidates[choice.names.index(value)]
        else:
            assert isinstance(choice, InputChoice)
            idx = [int(i) for i in ([value] if isinstance(value, int) else value)]
            if len(idx) != choice.n_chosen or not all(0 <= i < choice.n_inputs for i in idx):
                raise GenotypeError(
                    f"fix: input choice '{label}' needs {choice.n_chosen} distinct index(es) in "
                    f"[0, {choice.n_inputs}), got {value!r}"
                )
            new = ChosenInputs(idx)
        parent_path, _, attr = path.rpartition(".")
        parent = out.get_submodule(parent_path) if parent_path else out
        setattr(parent, attr, new)
    return out


def iter_choices(model: nn.Module) -> Iterator[tuple[str, _Choice]]:
    """(path, choice) of every choice in `model`."""
    for path, m in model.named_modules():
        if isinstance(m, _Choice):
            yield path, m


def check_parts(config: Any, space: ModelSpace | None = None) -> None:
    """Refuse, with the reason, parts that need a built-in space's tables or cell layout."""
    s = config.search
    multi = [
        k
        for k, v in (space.labels.items() if space is not None else [])
        if isinstance(v[0][1], InputChoice) and v[0][1].n_chosen > 1
    ]
    if multi and s.derive.name in ("threshold", "top_k"):
        raise ConfigError(
            f"the derivation '{s.derive.name}' picks one candidate per choice, but the input "
            f"choice(s) {', '.join(multi)} keep several inputs; use derive 'default'"
        )
    named = [("regularizer", r.name) for r in s.regularizers] + [("derivation", s.derive.name)]
    for kind, name in named:
        why = UNSUPPORTED_PARTS[kind].get(name)
        if why:
            raise ConfigError(
                f"the {kind} '{name}' does not work on a user model: {why}; leave it out of "
                f"the config (every relaxation, schedule and updater works)"
            )


# =========================================================================== registered
def register_model(
    name: str, factory: Callable[[], nn.Module], input_shape: Sequence[int] | None = None
) -> type[ModelSpace]:
    """Register a user model as the space `name` (for the CLI: `--space name`).

    factory(): a fresh model with its choices; input_shape: one sample's shape without the
    batch axis (what `diffnas export` feeds the fixed model). A search, derive or export of
    a run of this space rebuilds the model with the factory; the data come from a dataset
    registered in `DATASETS` that returns `UserData`.
    """
    from diffnas.registry import SPACES

    if name in SPACES:
        old = getattr(SPACES.get(name), "factory_fn", None)
        if old is None or getattr(old, "__qualname__", None) != getattr(
            factory, "__qualname__", None
        ):
            raise ConfigError(f"a space named '{name}' is already registered")
        SPACES._items.pop(name)  # the same plugin imported again: its new definition wins
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else None

    def init(self: ModelSpace, cfg: SpaceConfig | None = None) -> None:
        ModelSpace.__init__(self, None, cfg, factory=factory, name=name)

    cls = type(
        f"ModelSpace_{name}",
        (ModelSpace,),
        {"name": name, "__init__": init, "factory_fn": factory, "input_shape": shape},
    )
    SPACES.add(name, cls)
    return cls
