"""Scale of the enhanced gradient's two terms, to choose the complexity-pull weight μ.

At the supernet's initial α, averages |⟨g, o(x) − y⟩ − Σ p ⟨g, o(x) − y⟩| (the enhanced
gradient with μ = 0) over the α entries of a few validation batches, and |r − mean r| (the
pull per unit μ, r = cost / the edge's largest cost), so that μ can be set as a fraction of
the loss signal.

    PYTHONPATH=src python benchmarks/enhanced_gradient_scale.py                      # digits
    PYTHONPATH=src python benchmarks/enhanced_gradient_scale.py --dataset cifar10 \
        --data-root DATA --set data.resolution=16 --set space.channels=8 --set space.layers=5
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from diffnas.config import load_config
from diffnas.search import Searcher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    overrides = [
        f"data.dataset={a.dataset}",
        "search.relaxation={name: enhanced, mu: 0.0}",
        "log.progress=false",
        f"threads={a.threads}",
        "data.subset=0.05" if a.dataset != "digits" else "data.subset=1.0",
        *([f"data.root={a.data_root}"] if a.data_root else []),
        *a.overrides,
    ]
    s = Searcher(load_config(["enhanced_gradient"], overrides))
    grads = []
    for i, (x, y) in enumerate(s.data.val.epoch(0)):
        if i == a.batches:
            break
        loss = F.cross_entropy(s.model(x, s.relaxation.mix(s.arch)), y)
        g = torch.autograd.grad(loss, list(s.arch.alpha.values()))
        grads.append(torch.cat([t.flatten() for t in g]).abs())
    v = torch.cat(grads)
    pulls = []
    for key, rel in s.relaxation.rel_cost.items():
        probs = torch.softmax(s.arch.alpha[key].detach(), -1)
        pulls.append((rel - (probs * rel).sum(-1, keepdim=True)).abs().flatten())
    pull = torch.cat(pulls)
    print(f"{s.data.dataset.label}: {a.batches} batches of {s.config.data.batch_size}")
    print(f"  loss term |ĝ| (mu=0): mean {float(v.mean()):.4f}, median {float(v.median()):.4f}")
    print(f"  pull per unit mu |r - Σ p r|: mean {float(pull.mean()):.4f}")
    print(
        f"  mu giving a pull of 10 % of the mean loss term: {0.1 * float(v.mean() / pull.mean()):.4f}"
    )


if __name__ == "__main__":
    main()
