"""Human-readable rendering of genotypes for the terminal."""

from __future__ import annotations

from diffnas.spaces.genotype import Genotype


def render_genotype(genotype: Genotype) -> str:
    lines = [f"genotype ({genotype.space}{', ' + genotype.name if genotype.name else ''})"]
    if genotype.space == "nb201":
        from diffnas.spaces.nb201 import to_nb201_string

        lines.append(f"  cell: {to_nb201_string(genotype)}")
        return "\n".join(lines)
    for cell in genotype.cells:
        stage = (
            "all stages"
            if cell.stage is None
            else (f"reduction {cell.stage}" if cell.type == "reduce" else f"stage {cell.stage}")
        )
        lines.append(f"  {cell.type} cell ({stage}):")
        by_dst: dict[int, list[str]] = {}
        for e in cell.edges:
            s = f"{e.op}({e.src})"
            if e.skip_fraction:
                s += f"[skip {e.skip_fraction:.2f}]"
            by_dst.setdefault(e.dst, []).append(s)
        for dst in sorted(by_dst):
            lines.append(f"    node {dst} = " + " + ".join(by_dst[dst]))
    return "\n".join(lines)
