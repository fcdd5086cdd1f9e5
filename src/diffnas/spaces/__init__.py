"""Search spaces: ops with costs, supernets, derivation rules, genotypes, discrete networks."""

from pathlib import Path

from diffnas.errors import GenotypeError
from diffnas.spaces.base import Space, get_space, space_for
from diffnas.spaces.genotype import CellGenotype, Edge, Genotype


def load_genotype(source: str | Path) -> Genotype:
    """A genotype from a JSON file, a run directory, a zoo name or an NB201 string; validated."""
    from diffnas.spaces import zoo
    from diffnas.spaces.nb201 import from_nb201_string

    text = str(source)
    if not text.strip():
        raise GenotypeError(
            "empty genotype argument: give a genotype file, a run directory, a zoo name or an "
            "NB201 string"
        )
    path = Path(text)
    if path.is_dir():
        from diffnas.plugins import load_for_run

        load_for_run(path)  # a run made with plugins: its space may be theirs
        path = path / "genotype.json"
        if not path.exists():
            raise GenotypeError(
                f"run directory '{source}' has no genotype.json (did its search finish an epoch?)"
            )
    if path.suffix == ".json" or path.exists():
        genotype = Genotype.load(path)
    elif zoo.is_zoo_name(text):
        return zoo.get(text)
    elif text.startswith("|"):
        return from_nb201_string(text)
    else:
        raise GenotypeError(
            f"'{text}' is not a genotype file, run directory, zoo name ({', '.join(zoo.names())}) "
            f"or NB201 string"
        )
    space_for(genotype)
    return genotype


__all__ = ["CellGenotype", "Edge", "Genotype", "Space", "get_space", "load_genotype", "space_for"]
