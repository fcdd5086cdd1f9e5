"""Conformance: every registered part and every preset passes the same checks.

Parametrized over the registries (diffnas.registry) and the preset files, so a new part or
preset gets these checks by being registered: it is built on a tiny supernet, takes search
steps and derives a genotype, its state survives torch.save / torch.load(weights_only=True)
into a fresh part, and a preset's run resumed from its epoch-1 checkpoint ends with the α
of an uninterrupted run.

A part that cannot run with its defaults on the tiny nb201 supernet gets its settings from
SETTINGS below; one that needs settings but has no entry fails, naming this table.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from diffnas.bench.latency import LatencyPredictor, layout_of
from diffnas.callbacks.base import Callback
from diffnas.config import Config, load_config
from diffnas.errors import ConfigError
from diffnas.parts import (
    Derivation,
    Regularizer,
    Relaxation,
    Schedule,
    Updater,
    build_part,
)
from diffnas.registry import (
    DERIVATIONS,
    REGULARIZERS,
    RELAXATIONS,
    SCHEDULES,
    UPDATERS,
    Registry,
)
from diffnas.search import Searcher

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "diffnas" / "configs"

# config key of each kind of part (regularizers: a list) -> its registry
# (the Searcher holds the part under the same name, but `derive` as `derivation`)
KINDS: dict[str, Registry] = {
    "relaxation": RELAXATIONS,
    "regularizers": REGULARIZERS,
    "schedule": SCHEDULES,
    "updater": UPDATERS,
    "derive": DERIVATIONS,
}

BASES = {
    "relaxation": Relaxation,
    "regularizers": Regularizer,
    "schedule": Schedule,
    "updater": Updater,
    "derive": Derivation,
}

TINY = [
    "data.dataset=digits",
    "data.subset=0.05",
    "data.batch_size=8",
    "log.progress=false",
    "threads=1",
]
NB201 = ["space.name=nb201", "space.channels=4", "space.layers=1"]
DARTS = ["space.name=darts", "space.channels=4", "space.layers=3", "space.nodes=2"]


@dataclass
class Setting:
    """What a part needs to run on a tiny supernet, and what it refuses."""

    # the part's spec in the config (YAML flow; None: its name); '{tmp}': the temporary directory
    spec: str | None = None
    # further overrides (space, ...) replacing the tiny nb201 supernet's where given
    overrides: list[str] = field(default_factory=list)
    # a message the part's clean ConfigError matches on the plain tiny nb201 supernet
    refuses_plain: str | None = None
    # makes files the spec names in the temporary directory (gets it and a tiny searcher)
    prepare: Callable[[Path, Searcher], None] | None = None


def _latency_predictor(tmp: Path, base: Searcher) -> None:
    """An (untrained) predictor for the tiny nb201 layout: the regularizer only needs one."""
    torch.manual_seed(0)
    LatencyPredictor(layout_of(base.model.arch_specs), hidden=(8,)).save(tmp / "latency.pt")


SETTINGS: dict[tuple[str, str], Setting] = {
    ("relaxation", "crb"): Setting(
        overrides=["space.exclude_ops=[none]"], refuses_plain="needs 'none' removed"
    ),
    ("regularizers", "latency"): Setting(
        spec="{name: latency, predictor: '{tmp}/latency.pt', weight: 0.1}",
        refuses_plain="needs `predictor: FILE`",
        prepare=_latency_predictor,
    ),
    ("regularizers", "rdarts"): Setting(
        overrides=[*DARTS, "space.cells=NRN"], refuses_plain="per-cell α"
    ),
    ("regularizers", "sdarts_adv"): Setting(spec="{name: sdarts_adv, steps: 1}"),
    ("derive", "random_search"): Setting(spec="{name: random_search, samples: 2, eval_images: 8}"),
    ("derive", "aca"): Setting(
        spec="{name: aca, max_batches: 1}", overrides=["space.exclude_ops=[skip_connect]"]
    ),
}

PARTS = [(kind, name) for kind, reg in KINDS.items() for name in reg.names()]
PRESETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def _part_override(kind: str, spec: str) -> str:
    return f"search.{kind}=[{spec}]" if kind == "regularizers" else f"search.{kind}={spec}"


def _config(overrides: list[str], preset: str = "darts") -> Config:
    return load_config([preset], [*TINY, *overrides])


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return bool(a == b) and type(a) is type(b)


def _roundtrip(state: Any) -> Any:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.fixture(scope="module")
def base() -> Searcher:
    return Searcher(_config([*NB201, "search.epochs=1"]))


@dataclass
class Built:
    searcher: Searcher
    part: Any
    spec_text: str


@pytest.fixture(scope="module")
def built(base: Searcher, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Built]:
    """A Searcher per part (built once), with that part in its config, after two steps."""
    cache: dict[tuple[str, str], Built] = {}
    tmp = tmp_path_factory.mktemp("parts")

    def get(kind: str, name: str) -> Built:
        if (kind, name) in cache:
            return cache[(kind, name)]
        setting = SETTINGS.get((kind, name), Setting())
        if setting.prepare is not None:
            setting.prepare(tmp, base)
        spec = (setting.spec or name).replace("{tmp}", str(tmp))
        overrides = [*NB201, "search.epochs=1", _part_override(kind, spec), *setting.overrides]
        torch.manual_seed(0)
        try:
            s = Searcher(_config(overrides))
        except ConfigError as exc:
            if (kind, name) in SETTINGS:
                raise
            pytest.fail(
                f"{kind} '{name}' does not run on the tiny nb201 supernet with its defaults "
                f"({exc}); give it an entry in SETTINGS of tests/test_conformance.py"
            )
        batches = iter(s.data.train.epoch(0))
        for _ in range(2):
            s.search_step(next(batches))
        attr = {"derive": "derivation"}.get(kind, kind)
        part = s.regularizers[0] if kind == "regularizers" else getattr(s, attr)
        cache[(kind, name)] = Built(s, part, spec)
        return cache[(kind, name)]

    return get


def test_settings_name_registered_parts() -> None:
    assert set(SETTINGS) <= set(PARTS), set(SETTINGS) - set(PARTS)


@pytest.mark.parametrize("kind,name", PARTS, ids=[f"{k}-{n}" for k, n in PARTS])
def test_part_takes_search_steps_and_derives(kind: str, name: str, built) -> None:
    b = built(kind, name)
    s = b.searcher
    assert isinstance(b.part, KINDS[kind].get(name)) and isinstance(b.part, BASES[kind])
    assert s.global_step == 0 and s.meters.loss["train"].n == 16  # two weight steps ran
    for p in [*s.model.parameters(), *s.arch_parameters()]:
        assert bool(torch.isfinite(p).all())
    json.dumps(b.part.metrics())  # metrics go to metrics.jsonl
    genotype = s.derivation.derive(s, final=True)
    assert genotype.space == s.config.space.name and genotype.cells


@pytest.mark.parametrize("kind,name", PARTS, ids=[f"{k}-{n}" for k, n in PARTS])
def test_part_state_round_trips_through_a_weights_only_checkpoint(
    kind: str, name: str, built
) -> None:
    b = built(kind, name)
    state = b.part.state_dict()
    loaded = _roundtrip(state)
    spec = b.searcher.config.search
    part_spec = spec.regularizers[0] if kind == "regularizers" else getattr(spec, kind)
    fresh = build_part(KINDS[kind], part_spec, f"search.{kind}")
    fresh.setup(b.searcher)
    fresh.load_state_dict(loaded)
    assert _equal(fresh.state_dict(), state)


REFUSING = [k for k, v in SETTINGS.items() if v.refuses_plain]


@pytest.mark.parametrize("kind,name", REFUSING, ids=[f"{k}-{n}" for k, n in REFUSING])
def test_part_refuses_the_plain_supernet_with_a_clean_error(kind: str, name: str) -> None:
    setting = SETTINGS[(kind, name)]
    assert setting.refuses_plain is not None
    overrides = [*NB201, "search.epochs=1", _part_override(kind, name)]
    with pytest.raises(ConfigError, match=setting.refuses_plain) as info:
        Searcher(_config(overrides))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- presets
# a preset's own sizes are replaced by tiny ones; these keep its method intact at that size
PRESET_TINY: dict[str, list[str]] = {
    "rdarts": ["space.cells=NRN"],
    "random_search": ["search.derive={name: random_search, samples: 2, eval_images: 8}"],
    "pc_darts": ["search.warmup_epochs=1", "supernet.partial_channels=2"],
    "aca": ["search.derive={name: aca, max_batches: 1}"],
    # one epoch per stage: the resumed run starts after the pruning and the K change
    "drnas": [
        "supernet.partial_channels=4",
        "search.schedule={name: progressive, stage_epochs: [1, 1], partial_channels: [4, 2], "
        "keep_ops: [4, 2]}",
    ],
    "drnas_nb201": [
        "search.schedule={name: progressive, stage_epochs: [1, 1], partial_channels: [4, 2], "
        "keep_ops: [5, 3]}",
    ],
    "sdarts_adv": ["search.regularizers=[{name: sdarts_adv, steps: 1}]"],
}


class Snapshot(Callback):
    """Keeps the checkpoint a run writes at the end of its first epoch."""

    name = "snapshot"

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def on_epoch_end(self, s: Any, metrics: dict[str, Any]) -> None:
        if metrics["epoch"] == 0:
            self.state = _roundtrip(s.state_dict())


# presets run on the tiny nb201 supernet (their parts and settings, at a fraction of the
# darts supernet's time), except those whose parts need the darts space
DARTS_ONLY = {"rdarts"}


def _preset_config(preset: str) -> Config:
    sizes = DARTS if preset in DARTS_ONLY else NB201
    tiny = ["data.subset=0.03", "search.epochs=2"]
    return _config([*sizes, *tiny, *PRESET_TINY.get(preset, [])], preset)


def test_every_preset_is_listed() -> None:
    assert {"darts", "darts_nb201", "gdas", "rdarts"} <= set(PRESETS)
    assert set(PRESET_TINY) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_resumed_after_epoch_one_ends_with_the_same_alpha(preset: str) -> None:
    cfg = _preset_config(preset)
    snap = Snapshot()
    torch.manual_seed(0)
    whole = Searcher(cfg, callbacks=[snap])
    whole.run_search()
    assert snap.state is not None
    resumed = Searcher(cfg)
    resumed.load_state_dict(snap.state)
    assert resumed.epoch == 1
    resumed.run_search()
    for key, alpha in whole.arch.state_dict().items():
        assert torch.equal(alpha, resumed.arch.state_dict()[key]), key
    assert whole.history[-1]["genotype"] == resumed.history[-1]["genotype"]
