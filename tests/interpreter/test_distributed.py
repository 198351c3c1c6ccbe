"""Fitting across processes (torchrun's setting): 2 gloo processes follow one process on the global batch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import amd_batches  # noqa: E402

from reidexplain.adapters import adapt_model  # noqa: E402
from reidexplain.attributes import AttributeSchema  # noqa: E402
from reidexplain.data import PKSampler  # noqa: E402
from reidexplain.interpreter import AMDModel, PaperAMD, TrainingConfig, fit  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")

CONFIG = TrainingConfig(epochs=3, lr=1e-3)


def _model() -> AMDModel:
    torch.manual_seed(0)
    # No BatchNorm: each process would normalise its own half (SyncBatchNorm needs CUDA).
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    adapter = adapt_model(net, amd_batches()[0]["image"][:2])
    return AMDModel(adapter, PaperAMD(hidden=16), AttributeSchema.generic(5), "euclidean")


def _halves(rank: int, world: int) -> list[dict]:
    out = []
    for batch in amd_batches():
        share = batch["image"].shape[0] // world
        out.append({k: v[rank * share:(rank + 1) * share] for k, v in batch.items()})
    return out


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        model = _model()
        history = fit(model, _halves(rank, world), CONFIG, progress=False, seed=1)
        torch.save({"history": history, "network": model.network.state_dict()}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_follow_one_process_on_the_global_batch(tmp_path: Path) -> None:
    single = _model()
    expected = fit(single, amd_batches(), CONFIG, progress=False, seed=1)
    out = str(tmp_path / "rank")
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, start_method="fork")
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        for a, b in zip(got["history"], expected, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
            assert a["prior"] == pytest.approx(b["prior"], rel=1e-4, abs=1e-6)
        for key, value in single.network.state_dict().items():
            torch.testing.assert_close(got["network"][key], value, rtol=1e-4, atol=1e-5)


def test_pk_sampler_shards_each_global_batch_by_rank() -> None:
    pids = [i // 4 for i in range(40)]
    whole = list(PKSampler(pids, p=4, k=2, seed=3, num_replicas=1, rank=0))
    halves = [list(PKSampler(pids, p=4, k=2, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves, strict=True)] == whole
    with pytest.raises(ValueError, match="divisible"):
        PKSampler(pids, p=3, k=2, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(pids, p=4, k=2, num_replicas=2, rank=2)
