"""Derivations: from the searched architecture weights to a discrete genotype."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffnas.errors import ConfigError

if TYPE_CHECKING:
    from diffnas.spaces.base import Space
    from diffnas.spaces.genotype import Genotype


def check_one_cell_per_alpha(space: Space, template: Genotype, derivation: str) -> None:
    """Derivations that read each α as one genotype cell need the space to keep them apart.

    The nb201 space with per-stage α (space.cells=NNN) merges its α into the one cell the
    benchmark scores; a per-α derivation would silently read one stage only.
    """
    keys = list(space.arch_specs())
    if len(keys) != len(template.cells):
        raise ConfigError(
            f"derivation '{derivation}' turns each α into one genotype cell, but the "
            f"{space.name} space derives {len(template.cells)} cell(s) from {len(keys)} α "
            f"({', '.join(keys)}); use derive 'default' (it averages the α), or drop space.cells"
        )
