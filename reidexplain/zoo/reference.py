"""Reference ReID models: trained once on the synthetic persons, then loaded from a local cache.

The demo, the docs and the benchmarks explain the same target: a :class:`~reidexplain.zoo.ReIDNet`
trained with :func:`~reidexplain.zoo.train_reid_model` on ``synthetic_splits(...)["train"]`` with the
sizes of :data:`REFERENCE_CONFIG`. The first call trains it (a few minutes on a laptop CPU for the
default ``"small"`` backbone) and stores the state dict, keyed by a hash of the full configuration,
with a JSON sidecar holding that configuration and the measured Rank-1/mAP; later calls load it.

The cache directory is ``$REIDEXPLAIN_CACHE`` if set, else ``$XDG_CACHE_HOME/reidexplain``, else
``~/.cache/reidexplain``.

Examples:
    >>> from reidexplain.zoo import REFERENCE_CONFIG, reference_splits
    >>> REFERENCE_CONFIG["image_size"]
    (128, 64)
    >>> splits = reference_splits(num_train_ids=4, num_test_ids=2, images_per_id=2)
    >>> sorted(splits), len(splits["train"])
    (['gallery', 'query', 'train'], 8)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from reidexplain.data import synthetic_splits
from reidexplain.distance import distance_matrix
from reidexplain.metrics.retrieval import evaluate_retrieval, extract_features
from reidexplain.zoo.registry import create_model, is_model, list_models
from reidexplain.zoo.training import train_reid_model

__all__ = [
    "REFERENCE_CONFIG",
    "cache_dir_path",
    "reference_config",
    "reference_splits",
    "load_reference_model",
]

log = logging.getLogger(__name__)

# Bump whenever the training recipe changes in a way that changes the trained weights: old cache
# entries then stop matching instead of being silently reused.
_RECIPE_VERSION = 1

_DATA_KEYS = ("num_train_ids", "num_test_ids", "images_per_id", "image_size", "seed")
_DOMAINS = ("market", "duke")
# Options that change where or how visibly training runs, not the weights: kept out of the hash.
_RUNTIME_KEYS = ("device", "num_workers")

REFERENCE_CONFIG: MappingProxyType[str, Any] = MappingProxyType(
    {
        # Data: synthetic_splits(num_train_ids, num_test_ids, images_per_id, image_size, seed).
        "num_train_ids": 400,
        "num_test_ids": 150,
        "images_per_id": 8,
        "image_size": (128, 64),
        "seed": 0,
        # Training: train_reid_model(...) keyword arguments.
        "epochs": 20,
        "p": 16,
        "k": 4,
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "warmup_fraction": 0.1,
        "label_smoothing": 0.1,
        "margin": 0.3,
        "triplet_weight": 1.0,
        "cache_images": True,
    }
)
"""The default configuration of the reference models (data sizes, seed and training recipe).

Read-only; override entries with keyword arguments of :func:`load_reference_model` or
:func:`reference_splits`. Measured with ``benchmarks/bench_zoo.py`` (``reidnet_small``, one torch
thread on a shared 2-core machine): 114 s of CPU (189 s wall under contention) to train, Rank-1 88.9 and
mAP 88.4 on the synthetic market query/gallery (raw pixels: 0.9 and 2.9), 21.8 and 24.4 on duke.
"""


def cache_dir_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory reference models are cached in (not created).

    Args:
        cache_dir: Explicit directory; default ``$REIDEXPLAIN_CACHE``, else
            ``$XDG_CACHE_HOME/reidexplain``, else ``~/.cache/reidexplain``.

    Returns:
        The directory as a ``Path``.

    Examples:
        >>> cache_dir_path("/tmp/models")
        PosixPath('/tmp/models')
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("REIDEXPLAIN_CACHE"):
        return Path(os.environ["REIDEXPLAIN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "reidexplain"
    return Path.home() / ".cache" / "reidexplain"


def _check_domain(domain: str) -> str:
    if domain not in _DOMAINS:
        raise ValueError(f"`domain`: expected one of {_DOMAINS}, got {domain!r}")
    return domain


def reference_config(domain: str = "market", backbone: str = "small", **overrides: Any) -> dict[str, Any]:
    """The full configuration of a reference model: :data:`REFERENCE_CONFIG` with ``overrides``.

    Args:
        domain: ``"market"`` or ``"duke"`` (the synthetic domain trained on).
        backbone: ``"small"``, ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        **overrides: Entries of :data:`REFERENCE_CONFIG` to change.

    Returns:
        A dict with ``domain``, ``backbone``, ``recipe_version`` and every configuration entry; it is
        what the cache key hashes.

    Raises:
        ValueError: unknown ``domain`` or ``backbone``.
        TypeError: an override that is not a configuration entry.

    Examples:
        >>> cfg = reference_config("duke", epochs=2)
        >>> cfg["domain"], cfg["epochs"], cfg["num_train_ids"]
        ('duke', 2, 400)
    """
    _check_domain(domain)
    if not is_model(f"reidnet_{backbone}"):
        known = [name.removeprefix("reidnet_") for name in list_models("reidnet_*")]
        raise ValueError(f"`backbone`: expected one of {known}, got {backbone!r}")
    unknown = sorted(set(overrides) - set(REFERENCE_CONFIG))
    if unknown:
        raise TypeError(
            f"reference model: unexpected options {unknown}; known: {sorted(REFERENCE_CONFIG)} "
            f"and {list(_RUNTIME_KEYS)}"
        )
    config = {"domain": domain, "backbone": backbone, "recipe_version": _RECIPE_VERSION}
    config.update(REFERENCE_CONFIG)
    config.update(overrides)
    config["image_size"] = tuple(int(v) for v in config["image_size"])
    return config


def _config_key(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_splits(domain: str = "market", with_masks: bool = True, **overrides: Any) -> dict[str, Any]:
    """The synthetic train/query/gallery splits of the reference configuration.

    Args:
        domain: ``"market"`` or ``"duke"``.
        with_masks: Whether items carry their attribute masks (not needed for retrieval).
        **overrides: Data entries of :data:`REFERENCE_CONFIG` (``num_train_ids``, ``num_test_ids``,
            ``images_per_id``, ``image_size``, ``seed``).

    Returns:
        ``{"train", "query", "gallery"}`` datasets from
        :func:`reidexplain.data.synthetic_splits`.

    Raises:
        ValueError: unknown ``domain``.
        TypeError: an override that is not a data entry.

    Examples:
        >>> splits = reference_splits("duke", num_train_ids=2, num_test_ids=2, images_per_id=2)
        >>> splits["query"].schema.name
        'dukemtmc'
    """
    _check_domain(domain)
    unknown = sorted(set(overrides) - set(_DATA_KEYS))
    if unknown:
        raise TypeError(f"reference_splits: unexpected options {unknown}; known: {list(_DATA_KEYS)}")
    sizes = {key: overrides.get(key, REFERENCE_CONFIG[key]) for key in _DATA_KEYS}
    return synthetic_splits(
        sizes["num_train_ids"], sizes["num_test_ids"], sizes["images_per_id"], domain=domain,
        seed=sizes["seed"], image_size=tuple(sizes["image_size"]), with_masks=with_masks,
    )


def _evaluate(model: nn.Module, splits: dict[str, Any]) -> dict[str, float]:
    qf, qp, qc = extract_features(model, splits["query"])
    gf, gp, gc = extract_features(model, splits["gallery"])
    return evaluate_retrieval(distance_matrix(qf, gf), qp, gp, qc, gc)


def _atomic_write(path: Path, write: Any) -> None:
    # Write next to the target and rename, so that a concurrent reader never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_cached(weights: Path, name: str, device: Any) -> nn.Module | None:
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        classifier = state.get("classifier.weight")
        model = create_model(name, num_classes=0 if classifier is None else int(classifier.shape[0]))
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any unreadable cache entry is rebuilt, not fatal
        warnings.warn(f"reference model: cannot read {weights} ({err}); training again", stacklevel=3)
        return None
    return model.to(device) if device is not None else model


def load_reference_model(
    domain: str = "market",
    backbone: str = "small",
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: bool = True,
    return_info: bool = False,
    **train_kwargs: Any,
) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """A ReIDNet trained on the synthetic persons, from the cache or trained (once) now.

    Args:
        domain: Synthetic domain trained on, ``"market"`` or ``"duke"``.
        backbone: ``"small"`` (the fast default), ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        cache_dir: Cache directory; default see :func:`cache_dir_path`.
        retrain: Train again and overwrite the cache entry even if it exists.
        progress: Show the training progress bar.
        return_info: Also return the sidecar dict (configuration, cache key, Rank-1/mAP on the
            synthetic query/gallery of ``domain``, training time).
        **train_kwargs: Entries of :data:`REFERENCE_CONFIG` to override (part of the cache key), and
            ``device``/``num_workers`` (not part of it).

    Returns:
        The model in eval mode (on ``device`` if given, else CPU), or ``(model, info)``.

    Raises:
        ValueError: unknown ``domain`` or ``backbone``.
        TypeError: unknown keyword arguments.

    Examples:
        >>> import tempfile
        >>> tiny = dict(num_train_ids=4, num_test_ids=2, images_per_id=2, image_size=(64, 32),
        ...             epochs=1, p=2, k=2)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     model, info = load_reference_model(cache_dir=tmp, progress=False, return_info=True, **tiny)
        >>> model.training, sorted(info["retrieval"])
        (False, ['mAP', 'rank1', 'rank10', 'rank5'])
    """
    runtime = {key: train_kwargs.pop(key) for key in _RUNTIME_KEYS if key in train_kwargs}
    config = reference_config(domain, backbone, **train_kwargs)
    key = _config_key(config)
    name = f"reidnet_{backbone}"
    directory = cache_dir_path(cache_dir)
    weights = directory / f"{name}_{domain}_{key}.pt"
    sidecar = weights.with_suffix(".json")

    if weights.exists() and not retrain:
        model = _load_cached(weights, name, runtime.get("device"))
        if model is not None:
            log.info("reference model %s (%s): loaded from %s", name, domain, weights)
            info = json.loads(sidecar.read_text()) if sidecar.exists() else {"config": config, "key": key}
            return (model.eval(), info) if return_info else model.eval()

    log.info("reference model %s (%s): training, config %s", name, domain, config)
    splits = reference_splits(domain, with_masks=False, **{k: config[k] for k in _DATA_KEYS})
    train_options = {k: v for k, v in config.items() if k in REFERENCE_CONFIG and k not in _DATA_KEYS}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])  # the weight initialisation is part of the configuration
        model = create_model(name)
    started, cpu_started = time.perf_counter(), time.process_time()
    train_reid_model(
        model, splits["train"], seed=config["seed"], progress=progress, **train_options, **runtime
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    retrieval = _evaluate(model, splits)
    info = {
        "config": config,
        "key": key,
        "model": name,
        "num_classes": model.num_classes,
        "retrieval": retrieval,
        "train_seconds": round(seconds, 1),
        # CPU time of all threads: unlike the wall time, barely affected by other processes.
        "train_cpu_seconds": round(cpu_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write(weights, lambda path: torch.save(state, path))
    _atomic_write(sidecar, lambda path: path.write_text(json.dumps(info, indent=2, default=list)))
    log.info(
        "reference model %s (%s): trained in %.0f s, Rank-1 %.1f, mAP %.1f; cached at %s",
        name, domain, seconds, retrieval["rank1"], retrieval["mAP"], weights,
    )
    return (model.eval(), info) if return_info else model.eval()
