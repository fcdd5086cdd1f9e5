"""search.compile: the compiled cells compute what the eager engine computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffnas.config import load_config
from diffnas.errors import ConfigError

TINY = [
    "space.name=nb201",
    "space.channels=4",
    "space.layers=1",
    "space.exclude_ops=[avg_pool_3x3,nor_conv_3x3]",  # fewer ops: a shorter trace
    "data.batch_size=4",
    "data.dataset=synthetic",
    "device=cpu",
    "threads=1",
]


def test_compiled_cells_give_the_eager_loss_and_gradients() -> None:
    from diffnas.search import Searcher
    from diffnas.supernet.dag import SearchDAG

    # aot_eager traces forward and the engine's hand-written backwards as inductor does,
    # without generating code; one cell only, to keep the test short (inductor is measured
    # by bench speed --compile)
    s = Searcher(
        load_config(["darts"], [*TINY, "search.compile=cell", "search.compile_backend=aot_eager"])
    )
    cells = [m for m in s.model.modules() if isinstance(m, SearchDAG)]
    assert len(cells) == 3 and all(c._compiled_call_impl is not None for c in cells)
    for c in cells[1:]:  # back to eager: the test traces one cell
        c._compiled_call_impl = None
    x, y = next(s.data.train.epoch(0))
    params = [*s.arch_parameters(), *s.model.parameters()]

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = F.cross_entropy(s.forward(x, s.relaxation.mix(s.arch)), y)
        return loss.detach(), list(torch.autograd.grad(loss, params, allow_unused=True))

    with torch.compiler.set_stance("force_eager"):
        ref_loss, ref = grads()
    loss, got = grads()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for g, r in zip(got, ref):
        if r is None:
            assert g is None
        else:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    assert any(g is not None and g.abs().sum() > 0 for g in got[: len(s.arch_parameters())])


def test_a_compiled_cell_is_not_compiled_again_on_the_next_step() -> None:
    """The average-pool kernel caches its 1/count map; a compiled cell computes the map in
    its graph instead: a lookup made the graph depend on the cache's contents, and every
    cell compiled while the cache lacked its key was compiled again on the next step (a
    darts supernet: a second step as slow as the first)."""
    from torch._dynamo.utils import counters

    from diffnas.search import Searcher
    from diffnas.supernet import kernels
    from diffnas.supernet.dag import SearchDAG

    torch._dynamo.reset()
    kernels._INV_COUNTS.clear()
    pools = [*TINY[:3], "space.exclude_ops=[nor_conv_1x1,nor_conv_3x3]", *TINY[4:]]
    s = Searcher(
        load_config(["darts"], [*pools, "search.compile=cell", "search.compile_backend=aot_eager"])
    )
    cells = [m for m in s.model.modules() if isinstance(m, SearchDAG)]
    for c in cells[1:]:
        c._compiled_call_impl = None
    x, y = next(s.data.train.epoch(0))
    compiled = []
    for _ in range(3):
        loss = F.cross_entropy(s.forward(x, s.relaxation.mix(s.arch)), y)
        loss.backward()
        compiled.append(counters["stats"]["unique_graphs"])
    assert compiled[0] >= 1 and compiled[1:] == [compiled[0]] * 2, compiled


def test_compile_memory_budget_keeps_less_for_backward_and_the_same_gradients() -> None:
    """search.compile_memory_budget is AOTAutograd's activation memory budget for the
    compiled cells: a low budget recomputes in the backward what a budget of 1 keeps.
    Reference: the bytes autograd saves for backward (the quality bench's memory probe)
    and the eager engine's gradients. aot_eager_decomp_partition partitions forward and
    backward as inductor does (min-cut), without generating code."""
    from diffnas.bench.estimate import _SavedBytes
    from diffnas.search import Searcher
    from diffnas.supernet.dag import SearchDAG

    def run(budget: float) -> tuple[float, list[torch.Tensor]]:
        torch._dynamo.reset()
        s = Searcher(
            load_config(
                ["darts"],
                [
                    *TINY,
                    "search.compile=cell",
                    "search.compile_backend=aot_eager_decomp_partition",
                    f"search.compile_memory_budget={budget}",
                ],
            )
        )
        for c in [m for m in s.model.modules() if isinstance(m, SearchDAG)][1:]:
            c._compiled_call_impl = None  # one cell compiled: a shorter test
        torch.manual_seed(0)
        for p in s.model.parameters():  # the same weights for both budgets
            if p.dim() > 1:
                p.data.normal_(0, 0.3)
        x, y = next(s.data.train.epoch(0))
        params = [*s.arch_parameters(), *s.model.parameters()]
        saved = _SavedBytes(params)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            loss = F.cross_entropy(s.forward(x, s.relaxation.mix(s.arch)), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return saved.mb, [g for g in grads if g is not None]

    kept_all, grads_all = run(1.0)
    kept_low, grads_low = run(0.1)
    assert kept_low < 0.75 * kept_all, (kept_low, kept_all)  # measured: 0.90 vs 1.53 MB
    assert len(grads_low) == len(grads_all)
    for g, r in zip(grads_low, grads_all):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match=r"search.compile_memory_budget must be in \(0, 1\]"):
        load_config(["darts"], ["search.compile_memory_budget=0"])


def test_compile_settings_are_checked() -> None:
    from diffnas.supernet.compiled import compile_cells

    with pytest.raises(ConfigError, match="search.compile must be one of off, cell"):
        load_config(["darts"], ["search.compile=step"])
    with pytest.raises(ConfigError, match="not a torch.compile backend"):
        compile_cells(torch.nn.Linear(2, 2), "no_such_backend", None)
    cfg = load_config(["darts"], TINY)
    assert cfg.search.compile == "off"  # the default: nothing is compiled
    with pytest.raises(ConfigError, match="search.compile_mode must be one of default"):
        load_config(["darts"], ["search.compile_mode=fast"])
    with pytest.raises(ConfigError, match="is an inductor mode"):
        compile_cells(torch.nn.Linear(2, 2), "aot_eager", None, "reduce-overhead")


def test_compile_mode_reaches_torch_compile(monkeypatch) -> None:
    """search.compile_mode is handed to torch.compile for every cell (reduce-overhead: CUDA
    graphs of the fixed-shape cells on a GPU; not measured without one)."""
    from diffnas.search import Searcher
    from diffnas.supernet.dag import SearchDAG

    seen: list[dict] = []
    monkeypatch.setattr(SearchDAG, "compile", lambda self, **kw: seen.append(kw), raising=False)
    s = Searcher(
        load_config(
            ["darts"], [*TINY, "search.compile=cell", "search.compile_mode=reduce-overhead"]
        )
    )
    assert len(seen) == 3 and all(kw["mode"] == "reduce-overhead" for kw in seen)
    assert all(kw["backend"] == "inductor" and kw["dynamic"] is False for kw in seen)
    assert s.compile_note is not None and "mode reduce-overhead" in s.compile_note
    # compile_memory_budget null: 0.5 in float32, 1 under bf16 (half the bytes per activation)
    assert "activation memory budget 0.5" in s.compile_note
    bf16 = Searcher(load_config(["darts"], [*TINY, "search.compile=cell", "search.precision=bf16"]))
    assert bf16.compile_note is not None
    assert bf16.compile_note.endswith("activation memory budget 1")
    chosen = Searcher(
        load_config(["darts"], [*TINY, "search.compile=cell", "search.compile_memory_budget=0.25"])
    )
    assert chosen.compile_note is not None and chosen.compile_note.endswith("budget 0.25")


def test_cumulative_bn_running_stats_match_pytorch_without_a_host_read() -> None:
    # momentum=None (cumulative average): the factor 1/n stays a device tensor (no .item()
    # per step on CUDA); the running statistics must equal nn.BatchNorm2d's
    from diffnas.supernet.kernels import BatchStatsBatchNorm2d

    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(3, momentum=None).double()
    bn = BatchStatsBatchNorm2d(3, momentum=None).double()
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
        torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 3
