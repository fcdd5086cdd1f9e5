from __future__ import annotations

import torch

from diffnas.retrain.network import build_model, resolve_model
from diffnas.retrain.profile import check_edges, count_macs, count_params, profile
from diffnas.spaces import Genotype, zoo
from diffnas.spaces.genotype import CellGenotype, Edge


def tiny_genotype() -> Genotype:
    """A normal and a reduction cell with two edges each, both into node 2."""
    normal = CellGenotype(
        "normal", (Edge("sep_conv_3x3", 0, 2), Edge("skip_connect", 1, 2)), None, (2,)
    )
    reduce = CellGenotype(
        "reduce", (Edge("max_pool_3x3", 0, 2), Edge("dil_conv_3x3", 1, 2)), None, (2,)
    )
    return Genotype("darts", (normal, reduce), "tiny")


def test_params_and_macs_equal_a_count_by_hand() -> None:
    # 3 cells, C=4, 3x8x8 input, 10 classes. Reductions at 3//3 = 1 and 2*3//3 = 2, so the
    # cells are: normal (C=4), reduce (C=8), reduce (C=16); each cell outputs node 2 only.
    model = build_model(
        tiny_genotype(), num_classes=10, channels=4, layers=3, auxiliary=True, drop_path=0.2
    )
    hw = 8 * 8
    # stem: conv 3->12 3x3 (no bias) + BN(12)
    stem_p, stem_m = 3 * 12 * 9 + 2 * 12, hw * 12 * 3 * 9
    # cell 0 (normal, C=4; inputs: stem 12 ch, stem 12 ch at 8x8)
    pre0_p, pre0_m = 12 * 4 + 2 * 4, hw * 4 * 12  # ReLU-conv1x1-BN 12->4
    pre1_p, pre1_m = 12 * 4 + 2 * 4, hw * 4 * 12
    # sep_conv_3x3, stride 1: 2 x (depthwise 4*9 + pointwise 4*4 + BN 2*4)
    sep_p, sep_m = 2 * (4 * 9 + 4 * 4 + 2 * 4), 2 * (4 * 9 + 4 * 4) * hw
    # skip_connect, stride 1: identity, nothing
    cell0_p, cell0_m = pre0_p + pre1_p + sep_p, pre0_m + pre1_m + sep_m
    # cell 1 (reduce, C=8; inputs: stem 12 ch, cell 0's 4 ch, both 8x8; output 4x4)
    pre0_p, pre0_m = 12 * 8 + 2 * 8, hw * 8 * 12
    pre1_p, pre1_m = 4 * 8 + 2 * 8, hw * 8 * 4
    # max_pool_3x3: nothing; dil_conv_3x3 stride 2: depthwise 8*9 + pointwise 8*8 + BN, at 4x4
    dil1_p, dil1_m = 8 * 9 + 8 * 8 + 2 * 8, (8 * 9 + 8 * 8) * 16
    cell1_p, cell1_m = pre0_p + pre1_p + dil1_p, pre0_m + pre1_m + dil1_m
    # cell 2 (reduce, C=16; inputs: cell 0's 4 ch at 8x8, cell 1's 8 ch at 4x4; output 2x2)
    # s0 comes from before a reduction: FactorizedReduce = two 1x1 stride-2 convs 4->8 + BN(16)
    fr_p, fr_m = 2 * 4 * 8 + 2 * 16, 2 * 16 * 8 * 4
    pre1_p, pre1_m = 8 * 16 + 2 * 16, 16 * 16 * 8
    dil2_p, dil2_m = 16 * 9 + 16 * 16 + 2 * 16, (16 * 9 + 16 * 16) * 4
    cell2_p, cell2_m = fr_p + pre1_p + dil2_p, fr_m + pre1_m + dil2_m
    # classifier: global pool, Linear 16 -> 10 with bias
    fc_p, fc_m = 16 * 10 + 10, 16 * 10
    assert (stem_p, cell0_p, cell1_p, cell2_p, fc_p) == (348, 232, 312, 688, 170)
    hand_params = stem_p + cell0_p + cell1_p + cell2_p + fc_p
    hand_macs = stem_m + cell0_m + cell1_m + cell2_m + fc_m
    assert (hand_params, hand_macs) == (1750, 48736)

    params, aux_params = count_params(model)
    assert params == hand_params
    assert aux_params > 0  # the auxiliary head exists but is not counted
    macs, _ = count_macs(model, torch.randn(1, 3, 8, 8))
    assert macs == hand_macs  # eval-mode forward: the auxiliary head does not run
    check = check_edges(model, torch.randn(1, 3, 8, 8), "darts")
    assert check.ok and check.edges == 6  # 2 edges x 3 cells
    assert check.macs_hooks == sep_m + dil1_m + dil2_m  # skip and pools cost nothing
    assert check.params_modules == sep_p + dil1_p + dil2_p


def test_zoo_counts_match_published_parameter_counts() -> None:
    """DARTS_V2 3.3 M (CIFAR) / 4.7 M (ImageNet mobile), PC-DARTS 3.6 M, GDAS 3.4 M."""
    for name, published in (("DARTS_V2", 3.3), ("PC_DARTS", 3.6), ("GDAS", 3.4)):
        params, _ = count_params(resolve_model(name).build())
        assert round(params / 1e6, 1) == published, name
    mobile = resolve_model("DARTS_V2", network="imagenet")
    assert (mobile.input_size, mobile.num_classes) == (224, 1000)
    params, _ = count_params(mobile.build())
    assert round(params / 1e6, 1) == 4.7


def test_imagenet_network_reduces_224_to_7() -> None:
    model = build_model(zoo.get("DARTS_V2"), num_classes=5, network="imagenet", channels=8)
    assert len(model.cells) == 14
    sizes = []
    model.cells[-1].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    model.stem1.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    assert sizes == [28, 7]  # stride 8 in the stems, then two reductions


def test_profile_per_cell_and_aca_genotypes() -> None:
    def cell(op: str, t: str, stage: int | None, skip: float = 0.0) -> CellGenotype:
        edges = tuple(Edge(op, s, d, skip if d == 2 else 0.0) for d in range(2, 6) for s in (0, 1))
        return CellGenotype(t, edges, stage, (2, 3, 4, 5))

    per_cell = Genotype(
        "darts",
        (
            cell("sep_conv_3x3", "normal", 0),
            cell("dil_conv_3x3", "normal", 1),
            cell("sep_conv_5x5", "normal", 2),
            cell("max_pool_3x3", "reduce", 0),
            cell("dil_conv_5x5", "reduce", 1),
        ),
    )
    result = profile(
        resolve_model(per_cell, channels=4, layers=5, input_size=16),
        batch_sizes=(1, 2),
        repeats=2,
        warmup=1,
    )
    assert result.check.ok and result.check.edges == 5 * 8 and not result.check.unchecked
    assert set(result.latency_ms) == {1, 2} and all(v > 0 for v in result.latency_ms.values())
    # ACA edges (skip fractions) are counted as the modules that exist and checked against
    # Space.edge_cost, which prices the partial-channel op plus its identity part
    aca = Genotype(
        "darts", (cell("sep_conv_3x3", "normal", None, 0.5), cell("max_pool_3x3", "reduce", None))
    )
    result = profile(resolve_model(aca, channels=4, layers=3, input_size=16), batch_sizes=())
    assert result.check.edges == 3 * 8 and not result.check.unchecked
    assert result.check.ok and result.macs > 0


def test_nb201_profile_checks_its_edges() -> None:
    result = profile(resolve_model("NB201_OPTIMUM", channels=4, layers=1), batch_sizes=())
    assert result.check.ok and result.check.edges == 6 * 3  # 6 edges (no 'none') x 3 cells
