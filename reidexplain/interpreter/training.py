"""The AMD training loop: distil a frozen target's pair distances into attribute contributions.

Every batch gives ``B(B-1)/2`` unordered pairs ``i < j``. Because every distance and every loss term is
symmetric in ``(i, j)``, their mean equals the mean over the ``B(B-1)`` ordered pairs ``i != j`` of
AMD-SPEC section 4, at half the cost. The loss is

.. math:: L = w_{md} L_{md} + w_{ap} L_{ap}

with :func:`~reidexplain.interpreter.losses.metric_distillation_loss` and
:func:`~reidexplain.interpreter.losses.attribute_prior_loss`; Adam with weight decay and a linear
warm-up (AMD-SPEC section 5).

Examples:
    >>> TrainingConfig().resolved(gray_box=True).distillation_weight
    5.0
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from ..distance import pair_distance
from ._batch import iter_batches
from .losses import attribute_prior_loss, metric_distillation_loss
from .model_aware import (
    AttributeProbes,
    map_entropy_loss,
    model_aware_prior_loss,
    probe_loss,
    recognition_loss,
)
from .network import AMDInterpreter, component_embeddings
from .split import TargetSplit

__all__ = [
    "GRAY_BOX_DISTILLATION_WEIGHT",
    "BLACK_BOX_DISTILLATION_WEIGHT",
    "GRAY_BOX_TARGET_STEPS",
    "BLACK_BOX_TARGET_STEPS",
    "TrainingConfig",
    "pair_losses",
    "fit_interpreter",
    "default_epochs",
]

logger = logging.getLogger(__name__)


GRAY_BOX_DISTILLATION_WEIGHT = 5.0
"""Default ``w_md`` in gray-box mode: on the zoo's reference model, weight 3 gave X-mAP_e 83.0 but ADRE
3.7 %, weight 5 gave X-mAP_e 81.4 and ADRE 1.8 %, weight 10 X-mAP_e 77.0 and ADRE 0.7 %, weight 50
X-mAP_e 57.2 and ADRE 0.2 % (about 600 steps each; see ``docs/how-amd-works.md``)."""
BLACK_BOX_DISTILLATION_WEIGHT = 50.0
"""Default ``w_md`` in black-box mode, where ``d_hat`` does not start at ``d``: weight 50 gave Rank-1
with ``d_hat`` 42 % against 14 % at weight 5, at a similar ADRE (17 %)."""


GRAY_BOX_TARGET_STEPS = 600
"""Default optimiser steps in gray-box mode: 10 epochs of the reference training set, under 3 minutes on
2 CPU cores (X-mAP_e 81, ADRE 1.7 % on the reference model)."""
BLACK_BOX_TARGET_STEPS = 1500
"""Default steps in black-box mode, whose steps cost about half: Rank-1 with ``d_hat`` grew from 14 % at
660 steps to 61 % at 1570 steps on the reference model."""


@dataclass
class TrainingConfig:
    """Hyper-parameters of :func:`fit_interpreter`; defaults chosen by measurement (see the docs).

    Attributes:
        epochs: Passes over the loader; ``None`` picks :func:`default_epochs`.
        lr: Adam learning rate of the trunk (AMD-SPEC 5: 1e-4).
        head_lr_factor: The decomposition (and black-box embedding) head learns ``head_lr_factor`` times
            faster: it starts from zero, the trunk from the target's weights.
        trunk_lr_factor: Learning-rate factor of the trunk (0 freezes the copy of the target's trunk). A
            black-box trunk, which starts from scratch, uses ``head_lr_factor`` instead.
        weight_decay: Adam weight decay.
        warmup: Fraction of the steps with a linear warm-up of the learning rate.
        warmup_start: Learning-rate factor at the first step of the warm-up.
        distillation_weight: Weight ``w_md`` of the distillation loss; ``None``:
            :data:`GRAY_BOX_DISTILLATION_WEIGHT` (5) or :data:`BLACK_BOX_DISTILLATION_WEIGHT` (50).
        prior_weight: Weight ``w_ap`` of the attribute prior (its terms carry 2/10/10 already).
        flip: Random horizontal flips (attributes are left-right symmetric).
        target_steps: Optimiser steps aimed at when ``epochs`` is ``None``; ``None``:
            :data:`GRAY_BOX_TARGET_STEPS` (600) or :data:`BLACK_BOX_TARGET_STEPS` (1500).
        max_epochs: Upper bound of the automatic epochs.
        max_seconds: Stop after this many seconds (checked after every step); ``None``: no limit.
        usage_weights: AMD+ only: per-attribute model-usage weights ``w_k`` in ``[0, 1]``
            (:func:`~reidexplain.interpreter.model_aware.attribute_usage`); the prior then counts
            attribute ``k`` as exclusive to the degree ``w_k``. ``None``: the paper's prior.
        probe_weight: AMD+ only: weight of the per-attribute probe loss on ``e_k`` (0: off).
        entropy_weight: AMD+ only: weight of the maps' normalised spatial entropy (0: off).
        shared_maps: Gated maps that share one spatial map per one-hot attribute group (the colours of
            a garment), see :class:`~reidexplain.interpreter.AttributeDecomposition`. Changes the
            interpreter's architecture, so it is read when the interpreter is built.
        recognition_weight: With ``shared_maps``: weight of the attribute recognition loss on the
            features each region's map pools (:func:`~reidexplain.interpreter.model_aware.recognition_loss`),
            which teaches the shared maps where the attributes are (0: off).
        one_hot_groups: Attribute indices of the one-hot groups, for the recognition loss; filled in from
            the schema by the explainer.
        recognition_warmup: With ``shared_maps`` and ``recognition_weight > 0``: steps of recognition
            alone before the AMD losses start (the trunk frozen, the decomposition head at
            ``recognition_lr``), so that the shared maps know where the attributes are before they
            must split the distance. Cheap: no pass through the target's head.
        recognition_lr: Learning rate of that warm-up.

    Examples:
        >>> TrainingConfig(epochs=3).lr
        0.0001
    """

    epochs: int | None = None
    lr: float = 1e-4
    head_lr_factor: float = 10.0
    trunk_lr_factor: float = 1.0
    weight_decay: float = 5e-4
    warmup: float = 0.15
    warmup_start: float = 0.01
    distillation_weight: float | None = None
    prior_weight: float = 1.0
    flip: bool = True
    target_steps: int | None = None
    max_epochs: int = 60
    max_seconds: float | None = None
    usage_weights: tuple[float, ...] | None = None
    probe_weight: float = 0.0
    entropy_weight: float = 0.0
    shared_maps: bool = False
    recognition_weight: float = 0.0
    one_hot_groups: tuple[tuple[int, ...], ...] = ()
    recognition_warmup: int = 300
    recognition_lr: float = 3e-3

    def resolved(self, gray_box: bool) -> TrainingConfig:
        """A copy with the mode-dependent defaults filled in."""
        out = self
        if out.distillation_weight is None:
            weight = GRAY_BOX_DISTILLATION_WEIGHT if gray_box else BLACK_BOX_DISTILLATION_WEIGHT
            out = replace(out, distillation_weight=weight)
        if out.target_steps is None:
            out = replace(out, target_steps=GRAY_BOX_TARGET_STEPS if gray_box else BLACK_BOX_TARGET_STEPS)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict (saved with the interpreter)."""
        return asdict(self)


def default_epochs(batches_per_epoch: int | None, config: TrainingConfig) -> int:
    """Epochs giving about ``config.target_steps`` optimiser steps, between 1 and ``config.max_epochs``.

    Examples:
        >>> default_epochs(20, TrainingConfig(target_steps=600))
        30
    """
    if not batches_per_epoch:
        return max(1, min(config.max_epochs, 10))
    steps = GRAY_BOX_TARGET_STEPS if config.target_steps is None else config.target_steps
    return int(max(1, min(config.max_epochs, math.ceil(steps / batches_per_epoch))))


def pair_losses(embeddings: torch.Tensor, components: torch.Tensor, attributes: torch.Tensor,
                metric: str, config: TrainingConfig) -> dict[str, torch.Tensor]:
    """Losses over all pairs ``i < j`` of a batch.

    Args:
        embeddings: ``(B,D)`` target embeddings (constants).
        components: ``(B,M,D')`` component embeddings.
        attributes: ``(B,M)`` 0/1 labels.
        metric: ``"euclidean"`` or ``"cosine"``.
        config: Loss weights (``distillation_weight=None`` counts as the gray-box default).

    Returns:
        ``{"loss", "distillation", "prior", "distance", "reconstructed"}``; the last two are the ``(P,)``
        pair distances.

    Examples:
        >>> import torch
        >>> e = torch.rand(3, 4); comps = e[:, None].expand(3, 2, 4)
        >>> out = pair_losses(e, comps, torch.tensor([[0, 1], [0, 1], [1, 1]]), "euclidean", TrainingConfig())
        >>> round(float(out["distillation"]), 6)
        0.0
    """
    b = embeddings.shape[0]
    i, j = torch.triu_indices(b, b, offset=1, device=embeddings.device)
    d = pair_distance(embeddings[i], embeddings[j], metric)
    dk = pair_distance(components[i], components[j], metric)
    d_hat = dk.mean(dim=1)
    shares = dk / dk.sum(dim=1, keepdim=True).clamp_min(1e-12)
    exclusive = attributes[i] != attributes[j]
    md = metric_distillation_loss(d, d_hat)
    if config.usage_weights is None:
        ap = attribute_prior_loss(shares, exclusive)
    else:
        ap = model_aware_prior_loss(shares, exclusive, torch.as_tensor(config.usage_weights, device=shares.device))
    weight = GRAY_BOX_DISTILLATION_WEIGHT if config.distillation_weight is None else config.distillation_weight
    loss = weight * md + config.prior_weight * ap
    return {"loss": loss, "distillation": md.detach(), "prior": ap.detach(), "distance": d.detach(),
            "reconstructed": d_hat.detach()}


def _add_truthful_terms(losses: dict[str, torch.Tensor], out: Any, attributes: torch.Tensor,
                        config: TrainingConfig, probes: tuple | None) -> tuple | None:
    """AMD+: add the probe and map-entropy terms to ``losses["loss"]``; builds the probes on first use."""
    if config.probe_weight > 0:
        if probes is None:
            # Training-only classifiers: built once the width of e_k is known, never saved.
            net = AttributeProbes(attributes.shape[1], out.components.shape[-1]).to(out.components.device)
            probes = (net, torch.optim.Adam(net.parameters(), lr=config.lr * config.head_lr_factor))
        probes[1].zero_grad(set_to_none=True)
        term = probe_loss(probes[0](out.components), attributes)
        losses["loss"] = losses["loss"] + config.probe_weight * term
        losses["probe"] = term.detach()
    if config.recognition_weight > 0 and out.recognised is not None:
        term = _recognition_term(out.recognised, attributes, config)
        losses["loss"] = losses["loss"] + config.recognition_weight * term
        losses["recognition"] = term.detach()
    if config.entropy_weight > 0:
        term = map_entropy_loss(out.maps)
        losses["loss"] = losses["loss"] + config.entropy_weight * term
        losses["entropy"] = term.detach()
    return probes


def _calibrate(split: TargetSplit, interpreter: AMDInterpreter, images: torch.Tensor, metric: str) -> None:
    """Black box: scale the own head so that ``d_hat`` starts at the target's mean distance."""
    head = interpreter.embedding_head
    if head is None or bool(head.calibrated) or metric != "euclidean" or images.shape[0] < 2:
        return
    with torch.no_grad():
        out = component_embeddings(split, interpreter, images)
        b = images.shape[0]
        i, j = torch.triu_indices(b, b, offset=1, device=images.device)
        d = pair_distance(out.embeddings[i], out.embeddings[j], metric).mean()
        d_hat = pair_distance(out.components[i], out.components[j], metric).mean(dim=1).mean()
        if d > 0 and d_hat > 0:
            head.log_scale.add_(torch.log(d / d_hat))
        head.calibrated.fill_(True)


def _flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    coin = torch.rand(images.shape[0], generator=generator) < 0.5
    coin = coin.to(images.device)[:, None, None, None]
    return torch.where(coin, images.flip(-1), images)


def _recognition_term(recognised: torch.Tensor, attributes: torch.Tensor, config: TrainingConfig) -> torch.Tensor:
    """The recognition loss summed over the two read-outs ``(B,2,M)`` of shared maps."""
    return sum(recognition_loss(logits, attributes, config.one_hot_groups) for logits in recognised.unbind(1))


def _recognition_warmup(split: TargetSplit, interpreter: AMDInterpreter, loader: Iterable, num_attributes: int,
                        config: TrainingConfig, device: torch.device, generator: torch.Generator,
                        progress: bool, deadline: float | None) -> None:
    """Train the decomposition head of shared maps on attribute recognition alone (see ``TrainingConfig``).

    Stops early at ``deadline`` (a ``time.perf_counter`` value): the warm-up counts in ``max_seconds``.
    """
    head = interpreter.decomposition
    if not head.shared or config.recognition_weight <= 0 or config.recognition_warmup <= 0:
        return
    optimizer = torch.optim.Adam(head.parameters(), lr=config.recognition_lr)
    steps = 0
    with tqdm(total=config.recognition_warmup, disable=not progress, desc="AMD+ maps warm-up", unit="batch",
              dynamic_ncols=True) as bar:
        while steps < config.recognition_warmup:
            seen = steps
            for batch in iter_batches(loader, num_attributes, warn=False):
                images = batch.images.to(device)
                if config.flip:
                    images = _flip(images, generator)
                with torch.no_grad():
                    feats = interpreter.trunk(images) if interpreter.trunk is not None else split.embed(images)[0]
                _, recognised = head.decompose(feats, images)
                attributes = batch.attributes.to(device)
                loss = _recognition_term(recognised, attributes, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                if steps >= config.recognition_warmup or (deadline is not None and time.perf_counter() > deadline):
                    return
            if steps == seen:  # an empty loader: nothing to warm up on
                return


def _optimizer(interpreter: AMDInterpreter, config: TrainingConfig) -> torch.optim.Optimizer:
    own = interpreter.trunk
    trunk = [p for p in own.parameters() if p.requires_grad] if own is not None and config.trunk_lr_factor > 0 else []
    rest = [p for n, p in interpreter.named_parameters() if not n.startswith("trunk.") and p.requires_grad]
    # A black-box trunk starts from scratch, not from the target's weights: it learns as fast as the head.
    trunk_factor = config.head_lr_factor if interpreter.black_box else config.trunk_lr_factor
    groups = [{"params": trunk, "lr": config.lr * trunk_factor},
              {"params": rest, "lr": config.lr * config.head_lr_factor}]
    return torch.optim.Adam([g for g in groups if g["params"]], weight_decay=config.weight_decay)


def fit_interpreter(split: TargetSplit, interpreter: AMDInterpreter, loader: Iterable,
                    num_attributes: int, metric: str = "euclidean",
                    config: TrainingConfig | None = None, progress: bool = True,
                    seed: int = 0) -> list[dict[str, float]]:
    """Train ``interpreter`` on ``loader``; returns the per-epoch history.

    The best epoch (lowest mean loss) is kept; ``Ctrl-C`` stops training cleanly and also keeps the best
    completed epoch (or the current state when none has completed). Batches with fewer than two images
    are skipped; a batch of a single identity trains on its pairs.

    Args:
        split: The split target (frozen).
        interpreter: The network to train, on ``split.device``.
        loader: An iterable of batches (see :func:`reidexplain.interpreter._batch.unpack_batch`).
        num_attributes: ``M``.
        metric: Distance of the target.
        config: Hyper-parameters. Default: :class:`TrainingConfig`.
        progress: Show a tqdm bar with the running loss and ADRE.
        seed: Seed of the flips and of torch's global generator inside the call (restored afterwards).

    Returns:
        One dict per completed epoch: ``epoch``, ``loss``, ``distillation``, ``prior``, ``adre`` (percent),
        ``steps``, ``seconds``; an interrupted run adds ``{"interrupted": 1.0}`` to its last entry.

    Raises:
        ValueError: the loader yields no batch or no batch with two images.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from reidexplain.interpreter.split import split_model
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> split = split_model(net, torch.rand(2, 3, 8, 4))
        >>> interp = AMDInterpreter(split.make_trunk(), 4, 2, hidden=8)
        >>> data = [(torch.rand(4, 3, 8, 4), torch.randint(0, 2, (4, 2)))]
        >>> history = fit_interpreter(split, interp, data, 2, config=TrainingConfig(epochs=2), progress=False)
        >>> len(history)
        2
    """
    config = (config or TrainingConfig()).resolved(gray_box=not interpreter.black_box)
    device = split.device
    try:
        batches_per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        batches_per_epoch = None
    epochs = config.epochs if config.epochs is not None else default_epochs(batches_per_epoch, config)
    if epochs < 1:
        raise ValueError(f"epochs: expected >= 1, got {epochs}")
    if isinstance(loader, Iterator) and epochs > 1:
        raise TypeError("loader: a one-shot iterator cannot be read for several epochs; pass a DataLoader "
                        "or a list of batches")
    total = epochs * batches_per_epoch if batches_per_epoch else None
    warmup_steps = max(1, int(config.warmup * (total or config.target_steps or GRAY_BOX_TARGET_STEPS)))
    optimizer = _optimizer(interpreter, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, config.warmup_start + (1 - config.warmup_start) * s / warmup_steps))
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    start = time.perf_counter()
    bar = tqdm(total=total, disable=not progress, desc="AMD fit", unit="batch", dynamic_ncols=True)
    devices = [device] if device.type == "cuda" else []
    interpreter.train()
    steps = 0
    probes: tuple[AttributeProbes, torch.optim.Optimizer] | None = None
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            deadline = None if config.max_seconds is None else start + config.max_seconds
            _recognition_warmup(split, interpreter, loader, num_attributes, config, device, generator, progress,
                                deadline)
            interpreter.train()
            for epoch in range(epochs):
                sums = {"loss": 0.0, "distillation": 0.0, "prior": 0.0, "adre": 0.0}
                n = 0
                for batch in iter_batches(loader, num_attributes, warn=epoch == 0):
                    if batch.images.shape[0] < 2:
                        bar.update(1)
                        continue
                    images = batch.images.to(device)
                    if config.flip:
                        images = _flip(images, generator)
                    _calibrate(split, interpreter, images, metric)
                    out = component_embeddings(split, interpreter, images)
                    losses = pair_losses(out.embeddings, out.components, batch.attributes.to(device), metric, config)
                    probes = _add_truthful_terms(losses, out, batch.attributes.to(device), config, probes)
                    optimizer.zero_grad(set_to_none=True)
                    losses["loss"].backward()
                    optimizer.step()
                    if probes is not None:
                        probes[1].step()
                    schedule.step()
                    steps += 1
                    d, d_hat = losses["distance"], losses["reconstructed"]
                    adre = float(((d - d_hat).abs() / d.clamp_min(1e-12)).mean()) * 100
                    for key in ("loss", "distillation", "prior"):
                        sums[key] += float(losses[key].detach())
                    sums["adre"] += adre
                    n += 1
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{sums['loss'] / n:.3f}", adre=f"{sums['adre'] / n:.1f}%")
                    if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
                        break
                if n == 0:
                    raise ValueError("loader: no batch had two or more images; AMD needs pairs")
                entry = {"epoch": float(epoch + 1), **{k: v / n for k, v in sums.items()},
                         "steps": float(steps), "seconds": time.perf_counter() - start}
                history.append(entry)
                if best is None or entry["loss"] < best[0]:
                    best = (entry["loss"], {k: v.detach().clone() for k, v in interpreter.state_dict().items()})
                if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
                    logger.info("AMD fit: time limit of %.0f s reached after %d epochs", config.max_seconds, epoch + 1)
                    break
    except KeyboardInterrupt:
        logger.warning("AMD fit interrupted after %d steps; keeping the best completed epoch", steps)
        if history:
            history[-1]["interrupted"] = 1.0
        else:
            history.append({"epoch": 0.0, "steps": float(steps), "interrupted": 1.0,
                            "seconds": time.perf_counter() - start})
    finally:
        bar.close()
        interpreter.eval()
    if best is not None:
        interpreter.load_state_dict(best[1])
    return history
