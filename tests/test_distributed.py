"""Data-parallel search (diffnas.distributed): 2 gloo ranks against 1 process.

What is proved: a 2-rank search (each rank half of every global batch of 16, weight and α
gradients averaged over the ranks) ends with the α of a 1-process search of the same
config and seed whose supernet normalizes each half of a batch separately (batch
normalization uses per-rank statistics in a data-parallel search, so the reference runs
the two halves through the supernet one after the other and concatenates the logits), to
float32 tolerance, for first-order DARTS, GDAS, DARTS-PRIME and SDARTS-ADV (whose attack
uses the batch: its losses and gradients are averaged over the ranks). A 2-rank run killed with
SIGKILL mid-epoch resumes (`diffnas search --resume` on 2 ranks) to the α of the
uninterrupted run, and its checkpoint continues as well in a single process.

The ranks are forked from the test process with the environment torchrun sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import diffnas
from diffnas.cli import main as cli_main
from diffnas.search import Searcher
from diffnas.supernet.mixed import MixWeights
from diffnas.utils import load_checkpoint

from ._dist_worker import METHODS, KillAt, config_for, launch

KILL_METHOD, KILL_STEP = "darts_prime", 5  # 1 step after the checkpoint of step 4


class HalvesSearcher(Searcher):
    """The reference: one process whose BN sees each half of a batch on its own."""

    def forward(
        self, x: torch.Tensor, mix: MixWeights, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return torch.cat([Searcher.forward(self, xc, mix, params) for xc in x.chunk(2)])


def reference(method: str, state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    s = HalvesSearcher(config_for(method))
    if state is not None:
        s.load_state_dict(state)
    s.run_search()
    assert s.arch_steps > 1
    return {k: v.detach().clone() for k, v in s.arch.state_dict().items()}


def final_alpha(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 0)  # the end of the search
    return state["arch"]


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=2e-6, msg=k)


def searches(root: Path) -> None:
    """One rank: a start refused by rank 0, each method's search, the one that is killed."""
    import os

    from diffnas.errors import CheckpointError

    theirs = root / "not-ours"  # a directory diffnas did not make: rank 0 refuses it
    theirs.mkdir(exist_ok=True)
    (theirs / "notes.txt").write_text("the user's")
    try:
        diffnas.search(config_for("darts"), out=theirs, progress=False)
    except CheckpointError:  # raised on every rank, not only on rank 0
        (root / f"refused-{os.environ['RANK']}").touch()
    for method in METHODS:
        diffnas.search(config_for(method), out=root / method, progress=False)
    cfg = config_for(KILL_METHOD)
    diffnas.search(cfg, out=root / "killed", progress=False, callbacks=[KillAt(KILL_STEP)])


def resume_cli(run_dir: Path) -> None:
    code = cli_main(["search", "--resume", str(run_dir), "--no-progress"])
    raise SystemExit(code)


def test_two_ranks_match_one_process_and_a_killed_run_resumes(tmp_path: Path) -> None:
    assert launch(searches, (tmp_path,)) == [-9, -9]  # both ranks reached the kill
    assert (tmp_path / "refused-0").exists() and (tmp_path / "refused-1").exists()

    for method in METHODS:
        want = reference(method)
        assert_close(final_alpha(tmp_path / method), want)
        init = HalvesSearcher(config_for(method)).arch.state_dict()
        assert any((want[k] - init[k]).abs().max() > 1e-4 for k in want)  # α moved
        records = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").open()]
        assert [r["world_size"] for r in records] == [2]

    killed = tmp_path / "killed"
    state = load_checkpoint(killed / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (0, KILL_STEP - 1)  # the kill lost a step
    uninterrupted = final_alpha(tmp_path / KILL_METHOD)
    # the 2-rank checkpoint continued by one process (BN on the same halves): the same α
    assert_close(reference(KILL_METHOD, state), uninterrupted)

    assert launch(resume_cli, (killed,)) == [0, 0]
    assert_close(final_alpha(killed), uninterrupted)
    records = [json.loads(line) for line in (killed / "metrics.jsonl").open()]
    assert [(r["epoch"], r["world_size"]) for r in records] == [(0, 2)]


def test_batch_must_split_over_the_ranks() -> None:
    from diffnas.data.loader import BatchStream
    from diffnas.distributed import ShardedStream
    from diffnas.errors import ConfigError

    stream = BatchStream.__new__(BatchStream)
    stream.batch_size, stream.drop_last = 18, True
    with pytest.raises(ConfigError, match="does not split over 4 ranks"):
        ShardedStream(stream, 0, 4, "weight")
