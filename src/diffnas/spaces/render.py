"""Human-readable rendering of genotypes for the terminal."""

from __future__ import annotations

from diffnas.spaces.genotype import Genotype


def render_genotype(genotype: Genotype) -> str:
    lines = [f"genotype ({genotype.space}{', ' + genotype.name if genotype.name else ''})"]
    choices = genotype.info.get("choices")
    if isinstance(choices, dict):  # a user model (diffnas.choices): {label: chosen}
        return "\n".join([*lines, *(f"  {k}: {v}" for k, v in choices.items())])
    if genotype.space == "nb201":
        from diffnas.spaces.nb201 import to_nb201_string

        lines.append(f"  cell: {to_nb201_string(genotype)}")
        skips = [e for e in genotype.cells[0].edges if e.skip_fraction]
        if skips:
            lines.append(
                "  ACA skip fractions: "
                + ", ".join(f"{e.op}({e.src}->{e.dst}) {e.skip_fraction:.2f}" for e in skips)
            )
        return "\n".join([*lines, *_aca_summary(genotype)])
    for cell in genotype.cells:
        stage = (
            "all stages"
            if cell.stage is None
            else (f"reduction {cell.stage}" if cell.type == "reduce" else f"stage {cell.stage}")
        )
        lines.append(f"  {cell.type} cell ({stage}):")
        by_dst: dict[int, list[str]] = {}
        for e in cell.edges:
            # no square brackets: the CLI prints through Rich, which reads them as markup
            s = (
                f"{e.op}({e.src}, skip {e.skip_fraction:.2f})"
                if e.skip_fraction
                else f"{e.op}({e.src})"
            )
            by_dst.setdefault(e.dst, []).append(s)
        for dst in sorted(by_dst):
            lines.append(f"    node {dst} = " + " + ".join(by_dst[dst]))
    return "\n".join([*lines, *_aca_summary(genotype)])


def _aca_summary(genotype: Genotype) -> list[str]:
    """One line on the ACA allocation when the genotype's info has one (see derive/aca.py)."""
    aca = genotype.info.get("aca")
    if not isinstance(aca, dict):
        return []
    line = f"  ACA: mean skip fraction {aca.get('mean_skip_fraction', 0.0):.2f}"
    if "eval_params" in aca:
        line += (
            f"; default eval network {aca['eval_params']:,} parameters "
            f"({aca['eval_params_without_aca']:,} without ACA)"
        )
    return [line]
