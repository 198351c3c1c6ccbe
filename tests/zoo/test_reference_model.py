"""Reference models: cache location, cache key, train once then load (never the full-size model here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import reidexplain.zoo.reference as reference
from reidexplain.zoo import (
    REFERENCE_CONFIG,
    cache_dir_path,
    load_reference_model,
    reference_config,
    reference_splits,
)

TINY = {
    "num_train_ids": 4,
    "num_test_ids": 3,
    "images_per_id": 4,
    "image_size": (64, 32),
    "epochs": 2,
    "p": 2,
    "k": 2,
}


@pytest.fixture
def train_calls(monkeypatch):
    calls = []
    original = reference.train_reid_model

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(reference, "train_reid_model", counting)
    return calls


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDEXPLAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("REIDEXPLAIN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir_path() == tmp_path / "home" / ".cache" / "reidexplain"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir_path() == tmp_path / "xdg" / "reidexplain"
    monkeypatch.setenv("REIDEXPLAIN_CACHE", str(tmp_path / "own"))
    assert cache_dir_path() == tmp_path / "own"
    assert cache_dir_path(tmp_path / "explicit") == tmp_path / "explicit"


def test_trains_once_then_loads_from_cache(cache, train_calls, caplog):
    caplog.set_level(logging.INFO, logger="reidexplain.zoo.reference")
    model, info = load_reference_model(progress=False, return_info=True, **TINY)
    assert len(train_calls) == 1
    assert not model.training and model.num_classes == 4
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".pt")
    assert files[1].startswith("reidnet_small_market_")
    sidecar = json.loads((cache / files[0]).read_text())
    assert sidecar["config"]["epochs"] == 2 and sidecar["config"]["domain"] == "market"
    assert sidecar["config"]["recipe_version"] == reference._RECIPE_VERSION
    assert set(sidecar["retrieval"]) == {"rank1", "rank5", "rank10", "mAP"}
    assert 0.0 <= sidecar["retrieval"]["mAP"] <= 100.0
    assert info["key"] == sidecar["key"]
    assert "training" in caplog.text and str(cache) in caplog.text

    again, info2 = load_reference_model(progress=False, return_info=True, **TINY)
    assert len(train_calls) == 1  # loaded, not trained
    assert "loaded from" in caplog.text
    assert not again.training
    assert info2["retrieval"] == info["retrieval"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))


def test_config_changes_change_the_key_and_retrain_forces_training(cache, train_calls):
    load_reference_model(progress=False, **TINY)
    load_reference_model(progress=False, **{**TINY, "epochs": 1})
    assert len(train_calls) == 2
    assert len(list(cache.glob("*.pt"))) == 2
    load_reference_model(progress=False, retrain=True, **TINY)
    assert len(train_calls) == 3
    assert len(list(cache.glob("*.pt"))) == 2  # overwritten, not added
    # Runtime options are not part of the key.
    load_reference_model(progress=False, device="cpu", num_workers=0, **TINY)
    assert len(train_calls) == 3


def test_training_is_reproducible_from_the_configuration(tmp_path, train_calls):
    a = load_reference_model(cache_dir=tmp_path / "a", progress=False, **TINY)
    b = load_reference_model(cache_dir=tmp_path / "b", progress=False, **TINY)
    assert len(train_calls) == 2
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_unreadable_cache_entry_is_rebuilt(cache, train_calls):
    load_reference_model(progress=False, **TINY)
    (weights,) = cache.glob("*.pt")
    weights.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot read"):
        model = load_reference_model(progress=False, **TINY)
    assert len(train_calls) == 2 and not model.training
    assert torch.load(weights, weights_only=True)["bnneck.weight"].shape == (128,)


def test_config_and_splits_use_the_shared_defaults():
    cfg = reference_config()
    assert {k: cfg[k] for k in REFERENCE_CONFIG} == dict(REFERENCE_CONFIG)
    assert cfg["domain"] == "market" and cfg["backbone"] == "small"
    with pytest.raises(TypeError):
        REFERENCE_CONFIG["epochs"] = 1  # read-only
    splits = reference_splits("duke", num_train_ids=3, num_test_ids=2, images_per_id=3, image_size=(64, 32))
    assert len(splits["train"]) == 9
    assert len(splits["query"]) + len(splits["gallery"]) == 6
    assert splits["train"].schema.name == "dukemtmc"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"domain": "cuhk"}, ValueError, r"`domain`.*'cuhk'"),
        ({"backbone": "vit"}, ValueError, r"`backbone`.*'resnet50'.*'vit'"),
        ({"epoch": 3}, TypeError, r"unexpected options \['epoch'\]"),
    ],
)
def test_errors(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_reference_model(cache_dir=tmp_path, progress=False, **kwargs)
    assert not Path(tmp_path).exists() or not any(Path(tmp_path).iterdir())


def test_reference_splits_rejects_training_options():
    with pytest.raises(TypeError, match="reference_splits"):
        reference_splits(epochs=3)


@pytest.mark.slow
def test_default_reference_model_meets_its_targets(tmp_path):
    """The full default recipe (about 2-3 minutes of CPU): Rank-1 >= 85 and mAP >= 65 on market."""
    _, info = load_reference_model(cache_dir=tmp_path, progress=False, return_info=True)
    assert info["retrieval"]["rank1"] >= 85.0, info["retrieval"]
    assert info["retrieval"]["mAP"] >= 65.0, info["retrieval"]
