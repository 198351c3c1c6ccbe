"""The training loop: it learns, is seeded, survives odd batches and Ctrl-C."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import AMDTimmToy, InterruptingLoader, amd_batches, amd_sequential_net  # noqa: E402

from reidexplain.adapters import adapt_model  # noqa: E402
from reidexplain.attributes import AttributeSchema  # noqa: E402
from reidexplain.interpreter import (  # noqa: E402
    AMDModel,
    Components,
    PaperAMD,
    TrainingConfig,
    default_epochs,
    fit,
    pair_losses,
)

M = 5


def _setup(factory=amd_sequential_net, hidden: int = 32, distillation_weight: float | None = None):
    torch.manual_seed(0)
    adapter = adapt_model(factory(), amd_batches()[0]["image"][:2])
    model = AMDModel(adapter, PaperAMD(hidden=hidden, distillation_weight=distillation_weight),
                     AttributeSchema.generic(M), "euclidean")
    return model, model.network


def test_prior_decreases_and_distillation_stays_small() -> None:
    model, interp = _setup(distillation_weight=10.0)
    history = fit(model, amd_batches(), TrainingConfig(epochs=10, lr=1e-3), progress=False)
    assert len(history) == 10
    assert history[0]["adre"] < 0.1  # the maps start at 1: d_hat = d
    assert history[-1]["prior"] < 0.8 * history[0]["prior"]
    assert history[-1]["adre"] < 10.0
    assert history[-1]["steps"] == 20


def test_seeded_and_deterministic() -> None:
    runs = []
    for _ in range(2):
        model, interp = _setup()
        history = fit(model, amd_batches(), TrainingConfig(epochs=2, lr=1e-3),
                                  progress=False, seed=3)
        runs.append((history[-1]["loss"], interp.decomposition.classifier.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_global_rng_is_restored() -> None:
    model, interp = _setup()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, amd_batches(), TrainingConfig(epochs=1), progress=False)
    torch.testing.assert_close(torch.rand(3), expected)


def test_one_identity_batches_and_singletons() -> None:
    model, interp = _setup()
    one_id = amd_batches(num_ids=1, per_id=6, batch_size=6)
    singleton = [{"image": one_id[0]["image"][:1], "attributes": one_id[0]["attributes"][:1]}]
    history = fit(model, one_id + singleton, TrainingConfig(epochs=2),
                              progress=False)
    assert history[-1]["steps"] == 2  # the singleton batch was skipped
    assert history[-1]["prior"] >= 0.0
    with pytest.raises(ValueError, match="no batch had two or more images"):
        fit(model, singleton, TrainingConfig(epochs=1), progress=False)


def test_keyboard_interrupt_keeps_best_state() -> None:
    model, interp = _setup()
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

    history = fit(model, Interrupting(), TrainingConfig(epochs=5, lr=1e-3),
                              progress=False)
    assert len(history) == 2 and history[-1]["interrupted"] == 1.0
    assert not interp.training


def test_empty_and_one_shot_loaders() -> None:
    model, interp = _setup()
    with pytest.raises(ValueError, match="yielded no batches"):
        fit(model, [], TrainingConfig(epochs=1), progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit(model, iter(amd_batches()), TrainingConfig(epochs=2), progress=False)


def test_pair_losses_on_hand_made_components() -> None:
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # Component 0 carries the whole distance, component 1 none: d_hat = 5 / 2.
    comps = torch.stack([torch.stack([emb[0], emb[0]]), torch.stack([emb[1], emb[0]])])
    attrs = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    out = pair_losses(Components(emb, comps, torch.ones(2, 2, 1, 1)), attrs, "euclidean", 5.0, 1.0)
    assert float(out["distance"][0]) == pytest.approx(5.0)
    assert float(out["reconstructed"][0]) == pytest.approx(2.5)
    assert float(out["distillation"]) == pytest.approx(0.5)
    assert float(out["prior"]) == pytest.approx(0.0, abs=1e-6)  # shares (1, 0) with attribute 0 exclusive
    assert float(out["loss"]) == pytest.approx(5.0 * 0.5, rel=1e-5)


def test_mode_dependent_defaults() -> None:
    assert PaperAMD().distillation_weight_for(gray_box=True) == 5.0
    assert PaperAMD().distillation_weight_for(gray_box=False) == 50.0
    assert PaperAMD(distillation_weight=7.0).distillation_weight_for(gray_box=False) == 7.0
    assert TrainingConfig().steps_for(gray_box=True) == 600
    assert TrainingConfig().steps_for(gray_box=False) == 1500
    assert TrainingConfig(target_steps=20).steps_for(gray_box=False) == 20


def test_default_epochs() -> None:
    assert default_epochs(10, 600, 60) == 60
    assert default_epochs(100, 600, 60) == 6
    assert default_epochs(10_000, 600, 60) == 1
    assert default_epochs(None, 600, 60) == 10


def test_timm_split_trains_too() -> None:
    model, interp = _setup(AMDTimmToy)
    history = fit(model, amd_batches(fmt="triple"), TrainingConfig(epochs=2),
                              progress=False)
    assert len(history) == 2 and history[-1]["adre"] < 5.0


def test_unknown_labels_are_left_out_of_the_prior() -> None:
    g = torch.Generator().manual_seed(5)
    emb = torch.rand(4, 6, generator=g)
    comps = emb[:, None] + 0.2 * torch.rand(4, M, 6, generator=g)
    out = Components(emb, comps, torch.ones(4, M, 1, 1))
    attrs = torch.randint(0, 2, (4, M), generator=g).float()
    plain = pair_losses(out, attrs, "euclidean", 5.0, 1.0)
    all_known = pair_losses(out, attrs, "euclidean", 5.0, 1.0, known=torch.ones(4, M, dtype=torch.bool))
    torch.testing.assert_close(all_known["loss"], plain["loss"])
    none_known = pair_losses(out, attrs, "euclidean", 5.0, 1.0, known=torch.zeros(4, M, dtype=torch.bool))
    assert float(none_known["prior"]) == pytest.approx(0.0, abs=1e-7)
    # Flipping an unknown label changes nothing.
    known = torch.ones(4, M, dtype=torch.bool)
    known[0, 1] = False
    flipped = attrs.clone()
    flipped[0, 1] = 1 - flipped[0, 1]
    a = pair_losses(out, attrs, "euclidean", 5.0, 1.0, known=known)
    b = pair_losses(out, flipped, "euclidean", 5.0, 1.0, known=known)
    torch.testing.assert_close(a["loss"], b["loss"])


def test_fit_takes_nan_coded_unknown_labels() -> None:
    model, _ = _setup()
    batches = amd_batches()
    for batch in batches:
        batch["attributes"] = batch["attributes"].float()
        batch["attributes"][0, :2] = float("nan")
    history = fit(model, batches, TrainingConfig(epochs=2, lr=1e-3), progress=False)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)



@pytest.mark.parametrize("recipe", ["amd", "amd+"])
def test_an_interrupted_fit_resumes_and_ends_where_an_uninterrupted_one_would(recipe, tmp_path) -> None:
    from reidexplain.interpreter import create_recipe

    def build() -> AMDModel:
        torch.manual_seed(0)
        adapter = adapt_model(amd_sequential_net(), amd_batches()[0]["image"][:2])
        options = {"hidden": 16, "recognition_warmup": 2} if recipe == "amd+" else {"hidden": 16}
        model = AMDModel(adapter, create_recipe(recipe, **options), AttributeSchema.generic(M), "euclidean")
        model.prepared = model.recipe.prepare(model, None) if recipe == "amd" else {"one_hot_groups": []}
        return model

    config = TrainingConfig(epochs=3, lr=1e-3)
    whole = build()
    expected = fit(whole, amd_batches(), config, progress=False, seed=1)
    state = tmp_path / "fit.state"
    broken = build()
    with pytest.raises(RuntimeError, match="disk went away"):
        fit(broken, InterruptingLoader(amd_batches(), after=3), config, progress=False, seed=1, checkpoint=state,
            checkpoint_every=1)
    assert state.is_file()
    resumed = build()
    history = fit(resumed, amd_batches(), config, progress=False, seed=1, checkpoint=state, checkpoint_every=1)
    assert [h["steps"] for h in history] == [h["steps"] for h in expected]
    for got, want in zip(history, expected, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-7)
    for key, value in whole.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_a_bad_fit_state_file_says_so(tmp_path) -> None:
    model, _ = _setup()
    path = tmp_path / "state"
    path.write_bytes(b"not a state")
    with pytest.raises(ValueError, match="not a fit state"):
        fit(model, amd_batches(), TrainingConfig(epochs=1), progress=False, checkpoint=path)


def test_mixed_precision_and_channels_last_options() -> None:
    plain, _ = _setup()
    expected = fit(plain, amd_batches(), TrainingConfig(epochs=2, lr=1e-3), progress=False)
    last, _ = _setup()
    got = fit(last, amd_batches(), TrainingConfig(epochs=2, lr=1e-3, channels_last=True), progress=False)
    # Other convolution kernels: the same up to rounding. Adam then turns the rounding noise of
    # gradients that are zero in exact arithmetic (a conv bias before BatchNorm) into steps of size lr,
    # so the trajectories drift apart slowly: the first epoch agrees closely (1.1e-3 apart on an AMD
    # EPYC), the second loosely.
    assert got[0]["loss"] == pytest.approx(expected[0]["loss"], rel=5e-3)
    assert got[1]["loss"] == pytest.approx(expected[1]["loss"], rel=0.2)
    half, _ = _setup()  # bfloat16 autocast runs on the CPU too; its losses stay close to float32's
    low = fit(half, amd_batches(), TrainingConfig(epochs=2, lr=1e-3, precision="bfloat16"), progress=False)
    assert all(math.isfinite(h["loss"]) for h in low)
    assert low[0]["loss"] == pytest.approx(expected[0]["loss"], rel=0.1)
    with pytest.raises(ValueError, match="precision"):
        TrainingConfig(precision="int8")
