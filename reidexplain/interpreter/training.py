"""The AMD training loop: distil a frozen target's pair distances into attribute contributions.

:func:`fit` trains an :class:`~reidexplain.interpreter.model.AMDModel` with the losses of its recipe
(:mod:`reidexplain.interpreter.recipes`); :class:`TrainingConfig` holds the optimiser's hyper-parameters
only: Adam with weight decay and a linear warm-up (AMD-SPEC section 5).

Examples:
    >>> TrainingConfig().lr, TrainingConfig().steps_for(gray_box=False)
    (0.0001, 1500)
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._batch import iter_batches
from .._checks import check_embeddings
from .._progress import progress_bar
from .model import AMDModel
from .recipes import TargetPass

__all__ = ["GRAY_BOX_TARGET_STEPS", "BLACK_BOX_TARGET_STEPS", "TrainingConfig", "fit", "default_epochs",
           "target_pass"]

logger = logging.getLogger(__name__)

GRAY_BOX_TARGET_STEPS = 600
"""Default optimiser steps in gray-box mode: 10 epochs of the reference training set, under 3 minutes on
2 CPU cores (X-mAP_e 81, ADRE 1.7 % on the reference model)."""
BLACK_BOX_TARGET_STEPS = 1500
"""Default steps in black-box mode, whose steps cost about half: Rank-1 with ``d_hat`` grew from 14 % at
660 steps to 61 % at 1570 steps on the reference model."""


_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of :func:`fit`; defaults chosen by measurement (see the docs).

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
        flip: Random horizontal flips (attributes are left-right symmetric).
        target_steps: Optimiser steps aimed at when ``epochs`` is ``None``; ``None``:
            :data:`GRAY_BOX_TARGET_STEPS` (600) or :data:`BLACK_BOX_TARGET_STEPS` (1500).
        max_epochs: Upper bound of the automatic epochs.
        max_seconds: Stop after this many seconds (checked after every step); ``None``: no limit.
        precision: ``"float32"``, or ``"bfloat16"`` / ``"float16"`` for mixed precision: the forward
            passes run under ``torch.autocast`` (the losses in float32; float16 with a gradient scaler).
            For CUDA; bfloat16 also runs on the CPU.
        channels_last: Images, the interpreter's network and the target's copy in the channels-last
            memory format (faster convolutions on recent GPUs).

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
    flip: bool = True
    target_steps: int | None = None
    max_epochs: int = 60
    max_seconds: float | None = None
    precision: str = "float32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision: expected one of {sorted(_PRECISIONS)}, got {self.precision!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of :attr:`precision` (``None`` for float32)."""
        return _PRECISIONS[self.precision]

    def steps_for(self, gray_box: bool) -> int:
        """``target_steps`` with the mode's default filled in."""
        if self.target_steps is not None:
            return int(self.target_steps)
        return GRAY_BOX_TARGET_STEPS if gray_box else BLACK_BOX_TARGET_STEPS

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict (saved with the interpreter)."""
        return asdict(self)

    @classmethod
    def option_names(cls) -> set[str]:
        """Names of the fields."""
        return set(cls.__dataclass_fields__)


def default_epochs(batches_per_epoch: int | None, steps: int, max_epochs: int = 60) -> int:
    """Epochs giving about ``steps`` optimiser steps, between 1 and ``max_epochs``.

    Examples:
        >>> default_epochs(20, 600)
        30
    """
    if not batches_per_epoch:
        return max(1, min(max_epochs, 10))
    return int(max(1, min(max_epochs, math.ceil(steps / batches_per_epoch))))


def target_pass(model: AMDModel, loader: Iterable, progress: bool = False) -> TargetPass:
    """Target embeddings, labels and pids of every image of ``loader`` (one pass, no gradients)."""
    embs, attrs, pids, known = [], [], [], []
    try:
        total: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:  # an iterable without a length (an IterableDataset's loader, a generator)
        total = None
    with torch.no_grad(), progress_bar(total=total, enabled=progress, desc="target pass", unit="batch") as bar:
        for batch in iter_batches(loader, model.num_attributes, warn=False):
            bar.update(1)
            with model.adapter.bind(model.side_from_batch(batch)):
                emb = model.adapter.embed(batch.images.to(model.device))[1]
                embs.append(check_embeddings(emb, batch.images.shape[0], "model output").detach().cpu())
            attrs.append(batch.attributes.cpu())
            pids.append(batch.pids.cpu() if batch.pids is not None else None)
            known.append(batch.known_mask().cpu())
    have_pids = bool(pids) and all(p is not None for p in pids)
    mask = torch.cat(known)
    return TargetPass(torch.cat(embs), torch.cat(attrs), torch.cat(pids) if have_pids else None,
                      None if bool(mask.all()) else mask)


def _flip(images: torch.Tensor, generator: torch.Generator, world: tuple[int, int] = (1, 0)) -> torch.Tensor:
    """Flip a random half; under ``torchrun`` the coins of the global batch are drawn and each process
    takes its own, so that the flips are those of one process on the global batch."""
    size, rank = world
    b = images.shape[0]
    coin = (torch.rand(b * size, generator=generator) < 0.5)[rank * b:(rank + 1) * b]
    coin = coin.to(images.device)[:, None, None, None]
    return torch.where(coin, images.flip(-1), images)


class _Decomposer(nn.Module):
    """The network's ``decompose`` as a ``forward``, for DistributedDataParallel (which wraps forward)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, grid: torch.Tensor | None) -> Any:
        return self.network.decompose(images, grid)


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _gather(t: torch.Tensor | None) -> torch.Tensor | None:
    """The global batch of a per-process tensor, in rank order, with gradients to this process's part."""
    if t is None:
        return None
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # Deprecated in favour of a private module; it is still the public differentiable all-gather.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(t.contiguous()), dim=0)


def _gather_plain(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def _calibrate(model: AMDModel, images: torch.Tensor, side: tuple[torch.Tensor, ...] = ()) -> None:
    """Black box: scale the own head so that ``d_hat`` starts at the target's mean distance."""
    head = model.network.embedding_head
    if head is None or bool(head.calibrated) or model.metric != "euclidean" or images.shape[0] < 2:
        return
    from ..decomposition import pair_decomposition

    with torch.no_grad():
        out = model(images, side)
        b = images.shape[0]
        i, j = torch.triu_indices(b, b, offset=1, device=images.device)
        parts = pair_decomposition(out.embeddings[i], out.components[i], out.embeddings[j],
                                   out.components[j], model.metric)
        d, d_hat = parts.distance.mean(), parts.reconstructed.mean()
        if d > 0 and d_hat > 0:
            head.log_scale.add_(torch.log(d / d_hat))
        head.calibrated.fill_(True)


def _check_distributable(model: AMDModel) -> None:
    """What the fit cannot yet do across processes raises here, before anything runs."""
    reason = model.recipe.not_distributable()
    if reason:
        raise ValueError(f"fit under torchrun: {reason}")
    if model.network.black_box:
        raise ValueError("fit under torchrun: the black-box interpreter's own head is calibrated on one "
                         "process's batch; fit it in one process")


def _optimizer(model: AMDModel, config: TrainingConfig) -> torch.optim.Optimizer:
    network = model.network
    own = network.trunk
    trunk = [p for p in own.parameters() if p.requires_grad] if own is not None and config.trunk_lr_factor > 0 else []
    rest = [p for n, p in network.named_parameters() if not n.startswith("trunk.") and p.requires_grad]
    # A black-box trunk starts from scratch, not from the target's weights: it learns as fast as the head.
    trunk_factor = config.head_lr_factor if network.black_box else config.trunk_lr_factor
    groups = [{"params": trunk, "lr": config.lr * trunk_factor},
              {"params": rest, "lr": config.lr * config.head_lr_factor}]
    return torch.optim.Adam([g for g in groups if g["params"]], weight_decay=config.weight_decay)


_STATE_MAGIC = "reidexplain.fit-state"
_STATE_VERSION = 1


def _fit_state(model: AMDModel, optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator,
               context: dict[str, Any], position: dict[str, Any], history: list[dict[str, float]],
               best: tuple[float, dict[str, torch.Tensor]] | None) -> dict[str, Any]:
    """Everything a resumed fit needs to go on exactly where this one is."""
    extras = context.get("optimizers", [])
    return {
        "magic": _STATE_MAGIC, "version": _STATE_VERSION, "position": dict(position),
        "network": {k: v.detach().clone() for k, v in model.network.state_dict().items()},
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        "probes": context["probes"].state_dict() if "probes" in context else None,
        "extra_optimizers": [o.state_dict() for o in extras],
        "history": [dict(h) for h in history],
        "best": None if best is None else {"loss": best[0], "network": best[1]},
    }


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash while writing never leaves a half-written state behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"checkpoint: {str(path)!r} is not a fit state written by reidexplain ({err})") from None
    if not isinstance(state, dict) or state.get("magic") != _STATE_MAGIC or state.get("version") != _STATE_VERSION:
        raise ValueError(f"checkpoint: {str(path)!r} is not a fit state of version {_STATE_VERSION} "
                         "written by reidexplain")
    return state


def fit(model: AMDModel, loader: Iterable, config: TrainingConfig | None = None, progress: bool = True,
        seed: int = 0, history: list[dict[str, float]] | None = None, checkpoint: str | Path | None = None,
        checkpoint_every: int = 100, resume: bool = True) -> list[dict[str, float]]:
    """Train ``model``'s network on ``loader`` with its recipe's losses; returns the per-epoch history.

    The best epoch (lowest mean loss) is kept; ``Ctrl-C`` stops training cleanly and also keeps the best
    completed epoch (or the current state when none has completed). Any other exception (a loader that
    fails mid-epoch, a batch that does not pass the checks, a model output that is not finite) stops the
    fit and is re-raised, with a note, after the best completed epoch's weights are put back into the
    network (when an epoch completed; else the network is left as it was when the error came, and the
    caller should discard it). Batches with fewer than two images are skipped; a batch of a single identity trains on its pairs. The recipe's preparation (if any)
    must have been done: see :meth:`reidexplain.Explainer.fit`.

    Args:
        model: The model to train (its network on ``model.device``).
        loader: An iterable of batches (see :func:`reidexplain._batch.unpack_batch`).
        config: Hyper-parameters. Default: :class:`TrainingConfig`.
        progress: Show a progress bar with the running loss and ADRE (a few plain lines when the output
            is not a terminal).
        seed: Seed of the flips and of torch's global generator inside the call (restored afterwards).
        history: A list to append the per-epoch entries to (default: a new one).
        checkpoint: A file to write the fit's state to every ``checkpoint_every`` steps and at the end
            of every epoch (network, optimisers, schedule, random generators, position in the loader,
            history and best epoch). With ``resume``, a fit that finds this file goes on from it and
            ends where the uninterrupted fit would (for a loader that yields the same batches in the
            same order every time it is read, as lists and seeded samplers do). ``None``: no state is
            written.
        checkpoint_every: Steps between two writes of the state.
        resume: Go on from ``checkpoint`` when it exists.
        history: The list the per-epoch entries are appended to (default: a new one); after an
            exception it holds the completed epochs.

    Returns:
        One dict per completed epoch: ``epoch``, ``loss``, ``distillation``, ``prior``, ``adre`` (percent),
        ``steps``, ``seconds``; an interrupted run adds ``{"interrupted": 1.0}`` to its last entry.

    Raises:
        ValueError: the loader yields no batch or no batch with two images; the target's embeddings
            of a batch are not finite.
        TypeError: a one-shot iterator for several epochs.
        Exception: whatever the loader raised, re-raised.
    """
    config = config or TrainingConfig()
    recipe = model.recipe
    device = model.device
    num_attributes = model.num_attributes
    try:
        batches_per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        batches_per_epoch = None
    steps_wanted = config.steps_for(model.gray_box)
    epochs = config.epochs if config.epochs is not None else default_epochs(
        batches_per_epoch, steps_wanted, config.max_epochs)
    if epochs < 1:
        raise ValueError(f"epochs: expected >= 1, got {epochs}")
    if isinstance(loader, Iterator) and epochs > 1:
        raise TypeError("loader: a one-shot iterator cannot be read for several epochs; pass a DataLoader "
                        "or a list of batches")
    total = epochs * batches_per_epoch if batches_per_epoch else None
    warmup_steps = max(1, int(config.warmup * (total or steps_wanted)))
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, config.warmup_start + (1 - config.warmup_start) * s / warmup_steps))
    generator = torch.Generator().manual_seed(seed)
    amp = config.autocast_dtype
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    if config.channels_last:
        model.network.to(memory_format=torch.channels_last)
        model.adapter.target.to(memory_format=torch.channels_last)
    world = _world()
    distributed = world[0] > 1
    if distributed:
        _check_distributable(model)
        progress = progress and world[1] == 0

    def augment(images: torch.Tensor) -> torch.Tensor:
        return _flip(images, generator, world) if config.flip else images

    history = [] if history is None else history
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    start = time.perf_counter()
    bar = progress_bar(total=total, enabled=progress, desc="AMD fit", unit="batch", dynamic_ncols=True)
    devices = [device] if device.type == "cuda" else []
    context: dict[str, Any] = {"lr": config.lr, "head_lr_factor": config.head_lr_factor}
    steps = 0
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: expected >= 1 steps, got {checkpoint_every}")
    path = None if checkpoint is None else Path(checkpoint)
    saved = _load_state(path) if path is not None and resume and path.is_file() else None
    # Where the fit is: the epoch, the batches of it already read, and that epoch's running sums.
    position: dict[str, Any] = {"epoch": 0, "batch": 0, "steps": 0, "warmed_up": False,
                                "sums": {"loss": 0.0, "distillation": 0.0, "prior": 0.0, "adre": 0.0}, "n": 0}

    def save() -> None:
        if path is not None and world[1] == 0:  # only rank 0 writes
            _save_state(path, _fit_state(model, optimizer, schedule, generator, context, position, history, best))

    def out_of_time() -> bool:
        late = config.max_seconds is not None and time.perf_counter() - start > config.max_seconds
        if distributed and config.max_seconds is not None:  # rank 0's clock decides for everyone
            flag = torch.tensor([float(late)], device=device)
            torch.distributed.broadcast(flag, 0)
            late = bool(flag.item())
        return late

    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            deadline = None if config.max_seconds is None else start + config.max_seconds
            model.train()
            if saved is not None:
                model.network.load_state_dict(saved["network"])
                optimizer.load_state_dict(saved["optimizer"])
                schedule.load_state_dict(saved["schedule"])
                generator.set_state(saved["generator"])
                torch.set_rng_state(saved["torch_rng"])
                history[:] = [dict(h) for h in saved["history"]]
                if saved["best"] is not None:
                    best = (float(saved["best"]["loss"]), saved["best"]["network"])
                position = dict(saved["position"])
                steps = int(position["steps"])
                context["resume"] = saved
                logger.info("AMD fit: resumed from %s at epoch %d, step %d", path, position["epoch"] + 1, steps)
                bar.update(steps)
            if not position["warmed_up"]:
                recipe.warmup(model, lambda: iter_batches(loader, num_attributes, warn=False), config.lr,
                              augment, progress, deadline, planned=total)
                position["warmed_up"] = True
            model.train()
            if distributed:
                from torch.nn.parallel import DistributedDataParallel

                ids = None if device.type == "cpu" else [device]
                object.__setattr__(model, "_decomposer", DistributedDataParallel(_Decomposer(model.network),
                                                                                device_ids=ids))
            for epoch in range(int(position["epoch"]), epochs):
                resuming = epoch == position["epoch"] and position["batch"] > 0
                sums = dict(position["sums"]) if resuming else {"loss": 0.0, "distillation": 0.0, "prior": 0.0,
                                                                 "adre": 0.0}
                n = int(position["n"]) if resuming else 0
                skip = int(position["batch"]) if resuming else 0
                position.update(epoch=epoch, batch=0, sums=sums, n=n)
                for index, batch in enumerate(iter_batches(loader, num_attributes, warn=epoch == 0)):
                    if index < skip:  # read by the fit this one resumes
                        continue
                    position["batch"] = index + 1
                    if batch.images.shape[0] < 2:
                        bar.update(1)
                        continue
                    images = augment(batch.images.to(device))
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    side = model.side_from_batch(batch)
                    _calibrate(model, images, side)
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        out = model(images, side)
                    if amp is not None:  # the losses in float32
                        out = type(out)(*(None if t is None else t.float() for t in out))
                    check_embeddings(out.embeddings, images.shape[0], "model output")
                    known = None if batch.known is None else batch.known.to(device)
                    attributes = batch.attributes.to(device)
                    if distributed:  # pair losses over the global batch
                        out = type(out)(*(_gather(t) for t in out))
                        attributes, known = _gather_plain(attributes), _gather_plain(known)
                    losses = recipe.losses(model, out, attributes, context, known)
                    context.pop("resume", None)  # what the recipe builds on its first step has been restored
                    for extra in context.get("optimizers", []):
                        extra.zero_grad(set_to_none=True)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(losses["loss"]).backward()
                    scaler.step(optimizer)
                    for extra in context.get("optimizers", []):
                        scaler.step(extra)
                    scaler.update()
                    schedule.step()
                    steps += 1
                    d, d_hat = losses["distance"], losses["reconstructed"]
                    adre = float(((d - d_hat).abs() / d.clamp_min(1e-12)).mean()) * 100
                    for key in ("loss", "distillation", "prior"):
                        sums[key] += float(losses[key].detach())
                    sums["adre"] += adre
                    n += 1
                    position.update(steps=steps, sums=sums, n=n)
                    if steps % checkpoint_every == 0:
                        save()
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{sums['loss'] / n:.3f}", adre=f"{sums['adre'] / n:.1f}%")
                    if out_of_time():
                        break
                if n == 0:
                    raise ValueError("loader: no batch had two or more images; AMD needs pairs")
                entry = {"epoch": float(epoch + 1), **{k: v / n for k, v in sums.items()},
                         "steps": float(steps), "seconds": time.perf_counter() - start}
                history.append(entry)
                if best is None or entry["loss"] < best[0]:
                    best = (entry["loss"], {k: v.detach().clone() for k, v in model.network.state_dict().items()})
                position.update(epoch=epoch + 1, batch=0, n=0,
                                sums={"loss": 0.0, "distillation": 0.0, "prior": 0.0, "adre": 0.0})
                save()
                if out_of_time():
                    logger.info("AMD fit: time limit of %.0f s reached after %d epochs", config.max_seconds, epoch + 1)
                    break
    except KeyboardInterrupt:
        logger.warning("AMD fit interrupted after %d steps; keeping the best completed epoch", steps)
        if history:
            history[-1]["interrupted"] = 1.0
        else:
            history.append({"epoch": 0.0, "steps": float(steps), "interrupted": 1.0,
                            "seconds": time.perf_counter() - start})
    except Exception as err:
        if best is not None:
            model.network.load_state_dict(best[1])
        err.add_note(f"reidexplain: the AMD fit stopped after {len(history)} completed epochs and {steps} steps"
                     + ("; the network keeps the best completed epoch" if best is not None else ""))
        raise
    finally:
        bar.close()
        model.train(False)
        model.__dict__.pop("_decomposer", None)
    if best is not None:
        model.network.load_state_dict(best[1])
    return history
