"""The training loop: it learns, is seeded, survives odd batches and Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import AMDTimmToy, amd_batches, amd_sequential_net  # noqa: E402

from reidexplain.interpreter import (  # noqa: E402
    TrainingConfig,
    default_epochs,
    fit_interpreter,
    pair_losses,
    split_model,
)
from reidexplain.interpreter._build import build_interpreter  # noqa: E402

M = 5


def _setup(factory=amd_sequential_net, hidden: int = 32):
    torch.manual_seed(0)
    split = split_model(factory(), amd_batches()[0]["image"][:2])
    return split, build_interpreter(split, M, hidden=hidden)


def test_prior_decreases_and_distillation_stays_small() -> None:
    split, interp = _setup()
    config = TrainingConfig(epochs=10, lr=1e-3, distillation_weight=10.0)
    history = fit_interpreter(split, interp, amd_batches(), M, config=config, progress=False)
    assert len(history) == 10
    assert history[0]["adre"] < 0.1  # the maps start at 1: d_hat = d
    assert history[-1]["prior"] < 0.8 * history[0]["prior"]
    assert history[-1]["adre"] < 10.0
    assert history[-1]["steps"] == 20


def test_seeded_and_deterministic() -> None:
    runs = []
    for _ in range(2):
        split, interp = _setup()
        history = fit_interpreter(split, interp, amd_batches(), M, config=TrainingConfig(epochs=2, lr=1e-3),
                                  progress=False, seed=3)
        runs.append((history[-1]["loss"], interp.decomposition.classifier.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_global_rng_is_restored() -> None:
    split, interp = _setup()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_interpreter(split, interp, amd_batches(), M, config=TrainingConfig(epochs=1), progress=False)
    torch.testing.assert_close(torch.rand(3), expected)


def test_one_identity_batches_and_singletons() -> None:
    split, interp = _setup()
    one_id = amd_batches(num_ids=1, per_id=6, batch_size=6)
    singleton = [{"image": one_id[0]["image"][:1], "attributes": one_id[0]["attributes"][:1]}]
    history = fit_interpreter(split, interp, one_id + singleton, M, config=TrainingConfig(epochs=2),
                              progress=False)
    assert history[-1]["steps"] == 2  # the singleton batch was skipped
    assert history[-1]["prior"] >= 0.0
    with pytest.raises(ValueError, match="no batch had two or more images"):
        fit_interpreter(split, interp, singleton, M, config=TrainingConfig(epochs=1), progress=False)


def test_keyboard_interrupt_keeps_best_state() -> None:
    split, interp = _setup()
    batches = amd_batches()

    class Interrupting:
        def __init__(self) -> None:
            self.epoch = 0

        def __len__(self) -> int:
            return len(batches)

        def __iter__(self):
            self.epoch += 1
            for i, b in enumerate(batches):
                if self.epoch == 3 and i == 1:
                    raise KeyboardInterrupt
                yield b

    history = fit_interpreter(split, interp, Interrupting(), M, config=TrainingConfig(epochs=5, lr=1e-3),
                              progress=False)
    assert len(history) == 2 and history[-1]["interrupted"] == 1.0
    assert not interp.training


def test_empty_and_one_shot_loaders() -> None:
    split, interp = _setup()
    with pytest.raises(ValueError, match="yielded no batches"):
        fit_interpreter(split, interp, [], M, config=TrainingConfig(epochs=1), progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit_interpreter(split, interp, iter(amd_batches()), M, config=TrainingConfig(epochs=2), progress=False)


def test_pair_losses_on_hand_made_components() -> None:
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # Component 0 carries the whole distance, component 1 none: d_hat = 5 / 2.
    comps = torch.stack([torch.stack([emb[0], emb[0]]), torch.stack([emb[1], emb[0]])])
    attrs = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    out = pair_losses(emb, comps, attrs, "euclidean", TrainingConfig())
    assert float(out["distance"][0]) == pytest.approx(5.0)
    assert float(out["reconstructed"][0]) == pytest.approx(2.5)
    assert float(out["distillation"]) == pytest.approx(0.5)
    assert float(out["prior"]) == pytest.approx(0.0, abs=1e-6)  # shares (1, 0) with attribute 0 exclusive
    assert float(out["loss"]) == pytest.approx(5.0 * 0.5, rel=1e-5)  # the gray-box default weight


def test_mode_dependent_distillation_weight() -> None:
    assert TrainingConfig().resolved(gray_box=True).distillation_weight == 5.0
    assert TrainingConfig().resolved(gray_box=False).distillation_weight == 50.0
    assert TrainingConfig(distillation_weight=7.0).resolved(gray_box=False).distillation_weight == 7.0
    assert TrainingConfig().resolved(gray_box=True).target_steps == 600
    assert TrainingConfig().resolved(gray_box=False).target_steps == 1500


def test_default_epochs() -> None:
    config = TrainingConfig(target_steps=600, max_epochs=60)
    assert default_epochs(10, config) == 60
    assert default_epochs(100, config) == 6
    assert default_epochs(10_000, config) == 1
    assert default_epochs(None, config) == 10


def test_timm_split_trains_too() -> None:
    split, interp = _setup(AMDTimmToy)
    history = fit_interpreter(split, interp, amd_batches(fmt="triple"), M, config=TrainingConfig(epochs=2),
                              progress=False)
    assert len(history) == 2 and history[-1]["adre"] < 5.0
