from __future__ import annotations

import torch
import torch.nn.functional as F

from diffnas.search import Searcher
from diffnas.updaters.second_order import SecondOrder, _leaf_mix

from .conftest import tiny_config


def _double_searcher(space: str) -> tuple[Searcher, tuple[torch.Tensor, torch.Tensor]]:
    s = Searcher(tiny_config(space, epochs=1))
    s.model.double()
    s.arch.double()
    x, y = next(s.data.train.epoch(0))
    return s, (x.double()[:8], y[:8])


def test_finite_difference_hvp_matches_exact_double_backward() -> None:
    s, batch = _double_searcher("nb201")
    # A step small enough that no ReLU input changes sign: the check is of the formula, not
    # of how well a central difference bridges ReLU kinks (DARTS's 0.01 is far coarser).
    upd = SecondOrder(SecondOrder.Params(eps=1e-5))
    params = {n: p.detach() for n, p in s.model.named_parameters()}
    leaf_mix, _, leaves = _leaf_mix(s.relaxation.mix(s.arch))
    gen = torch.Generator().manual_seed(3)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params.values()]

    fd = upd.hessian_vector_product(s, params, leaf_mix, leaves, batch, v)

    w = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    loss = F.cross_entropy(s.forward(batch[0], leaf_mix, w), batch[1])
    gw = torch.autograd.grad(loss, list(w.values()), create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(gw, v))
    exact = torch.autograd.grad(dot, leaves)

    for a, b in zip(fd, exact):
        assert torch.linalg.vector_norm(b) > 0
        rel = torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)
        assert rel < 1e-6, float(rel)


def test_second_order_with_zero_step_equals_first_order() -> None:
    """ξ = 0: w' = w and the Hessian term vanishes, so ∇α is the first-order gradient."""
    s, _ = _double_searcher("darts")
    train = next(s.data.train.epoch(0))
    val = next(s.data.val.epoch(0))
    train, val = (train[0].double(), train[1]), (val[0].double(), val[1])
    SecondOrder(SecondOrder.Params(xi=0.0)).arch_grads(s, train, val)
    second = [p.grad.clone() for p in s.arch_parameters()]
    for p in s.arch_parameters():
        p.grad = None
    s.updater.arch_grads(s, train, val)  # the preset's first-order updater
    for a, b in zip(second, (p.grad for p in s.arch_parameters())):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_second_order_differs_from_first_order_with_a_real_step() -> None:
    s, _ = _double_searcher("nb201")
    train = next(s.data.train.epoch(0))
    val = next(s.data.val.epoch(0))
    train, val = (train[0].double(), train[1]), (val[0].double(), val[1])
    SecondOrder().arch_grads(s, train, val)
    second = [p.grad.clone() for p in s.arch_parameters()]
    s.updater.arch_grads(s, train, val)
    first = [p.grad for p in s.arch_parameters()]
    assert not all(torch.allclose(a, b) for a, b in zip(second, first))


def test_virtual_step_plain_is_the_optimizer_step_without_momentum_and_decay() -> None:
    """Before the first weight step (no momentum buffer) and without weight decay, the
    optimizer's next SGD step is w − ξ∇w L_train, the paper's plain virtual step; with a
    momentum buffer the two differ."""
    s, _ = _double_searcher("nb201")
    for g in s.w_opt.param_groups:
        g["weight_decay"] = 0.0
    train = next(s.data.train.epoch(0))
    val = next(s.data.val.epoch(0))
    train, val = (train[0].double(), train[1]), (val[0].double(), val[1])

    def grads(virtual_step: str) -> list[torch.Tensor]:
        SecondOrder(SecondOrder.Params(virtual_step=virtual_step)).arch_grads(s, train, val)
        return [p.grad.clone() for p in s.arch_parameters()]

    plain = grads("plain")
    for a, b in zip(plain, grads("optimizer")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    s.weight_step(train)  # the optimizer now holds a momentum buffer
    assert not all(torch.allclose(a, b) for a, b in zip(grads("plain"), grads("optimizer")))
