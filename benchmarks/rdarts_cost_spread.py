"""How RDARTS runs spread expected parameters over their searched cells (a table per run).

python benchmarks/rdarts_cost_spread.py RUN_DIR [RUN_DIR ...]   (runs with the rdarts part)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from diffnas.run import RunDir
from diffnas.spaces import get_space, load_genotype


def spread(values: list[float]) -> str:
    """Coefficient of variation (std / mean) and max/min ratio of same-type cells."""
    mean = statistics.fmean(values)
    cv = statistics.pstdev(values) / mean if mean else float("nan")
    return f"cv {cv:.4f}, max/min {max(values) / min(values):.3f}"


def derived_params(run_dir: Path) -> dict[str, int]:
    """Parameters of the ops of each derived cell, at the widths the supernet gave it."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    space = get_space(cfg.space)
    g = load_genotype(run_dir)
    widths, c = [], cfg.space.channels
    for t in space.cell_types():
        c = c * 2 if t == "reduce" else c
        widths.append(c)
    out = {}
    for i, (cell, width) in enumerate(zip(g.cells, widths)):
        out[f"cell{i}"] = sum(
            space.op_table[e.op].params(width, 2 if cell.type == "reduce" and e.src < 2 else 1)
            for e in cell.edges
        )
    return out


def main(runs: list[str]) -> None:
    for run_dir in runs:
        run = RunDir(run_dir)
        cfg = run.load_config()
        reg = cfg.search.regularizers[0].params if cfg.search.regularizers else {}
        print(f"== {run_dir}  rdarts {reg or '(defaults)'}")
        types = {f"cell{i}": t for i, t in enumerate(get_space(cfg.space).cell_types())}
        for r in run.read_metrics():
            line = [f"epoch {r['epoch'] + 1}: val_acc {r['val_acc']:.2f}"]
            line.append(f"Reg {r['rdarts/reg']:.3g} (d {r['rdarts/d']:.3g}, r {r['rdarts/r']:.3g})")
            line.append(f"lambda {r['rdarts/lambda']:.3g}")
            print("  " + ", ".join(line))
            for name in ("rdarts/cost", "rdarts/cost_ref"):
                costs = r[name]
                cells = "  ".join(f"{k} {v:9.1f}" for k, v in costs.items())
                groups = []
                for t in ("normal", "reduce"):
                    vals = [v for k, v in costs.items() if types.get(k) == t]
                    if len(vals) > 1:
                        groups.append(f"{t}: {spread(vals)}")
                print(f"    {name:16s} {cells}   | " + "; ".join(groups))
        if run.genotype_path.exists():
            d = derived_params(Path(run_dir))
            print(
                "    derived cells' op parameters: " + "  ".join(f"{k} {v}" for k, v in d.items())
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
