"""The user's entry point: :class:`Explainer` fits an AMD interpreter to any embedding model and explains.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from reidexplain.explainer import Explainer
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> data = [(torch.rand(6, 3, 16, 8), torch.randint(0, 2, (6, 4)))]
    >>> explainer = Explainer(model).fit(data, epochs=2, progress=False)
    >>> images, labels = data[0]
    >>> attribution = explainer.explain((images[0], images[1]))
    >>> attribution.contributions.shape, attribution.maps[0].shape
    (torch.Size([1, 4]), torch.Size([1, 4, 16, 8]))
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._batch import unpack_batch
from ._checks import (
    ZERO_DISTANCE,
    CheckedLoader,
    ZeroDistanceWarning,
    check_batch_size,
    check_embeddings,
    check_images,
    check_loader,
    check_model_devices,
    check_pair,
)
from .adapters import FeatureAdapter, adapt_model
from .attributes import AttributeSchema, get_schema
from .attribution import MatrixExplanation, PairAttribution
from .decomposition import Decomposition
from .distance import check_metric
from .interpreter._evaluate import embed_loader, retrieval_scores, score_query_gallery
from .interpreter.model import AMDModel, Components
from .interpreter.recipes import DEFAULT_RECIPE, RECIPES, Recipe, create_recipe
from .interpreter.training import TrainingConfig, fit, target_pass
from .ranking import (
    GalleryIndex,
    RankingExplanation,
    explain_topk,
    explain_topk_sharded,
    model_fingerprint,
    shard_bounds,
)
from .ranking._collectives import _all_gather, _process_group
from .ranking._topk import _unique_slots
from .ranking.distributed import shard_match_maps
from .ranking.index import _as_ids, _iter_images

__all__ = ["Explainer", "MatrixExplanation", "RankingExplanation", "GalleryIndex", "NotFittedError",
           "ZeroDistanceWarning", "FORMAT_VERSION",
           "METHODS"]

logger = logging.getLogger(__name__)
FORMAT_VERSION = 2
"""Version of the files :meth:`Explainer.save` writes (version 1 files still load)."""
METHODS = tuple(RECIPES.names())
"""Names of the registered training recipes (:data:`reidexplain.interpreter.recipes.RECIPES`)."""
_SIDE_FIELDS = ("camid", "pid")  # the batch fields a side input can be read from


def _rows(values: Any, rows: slice) -> torch.Tensor | None:
    """``values[rows]`` of per-image ids given as a tensor or a sequence (``None`` stays ``None``)."""
    if values is None:
        return None
    return (values if isinstance(values, torch.Tensor) else torch.as_tensor(values))[rows]


def _numbered(batches: Iterable[tuple], first: int, last: int) -> Iterable[tuple]:
    """The batches, each flagged whether it is one of the numbers ``first <= n < last`` (this shard's)."""
    for n, (images, pid, camid, _) in enumerate(batches):
        yield images, pid, camid, first <= n < last


class NotFittedError(RuntimeError):
    """The explainer was used before :meth:`Explainer.fit` or :meth:`Explainer.load`.

    Examples:
        >>> issubclass(NotFittedError, RuntimeError)
        True
    """


class Explainer:
    """Explain an embedding model's pair distances with AMD (Attribute-guided Metric Distillation).

    The target model is never modified: a frozen copy (eval mode) is explained, on ``device``, through
    a feature adapter (:mod:`reidexplain.adapters`); a model the user left in train mode stays in train
    mode, and is explained as it behaves in eval mode. Defaults of :meth:`fit` were chosen by measurement
    (see ``docs/how-amd-works.md``).

    Inputs are checked at every method (``docs/bad-inputs.md``): images must be finite floating-point
    ``(B,3,H,W)`` tensors of the size the interpreter was fitted on (another float dtype is cast to the
    model's; images on another device are copied to ``device``); a pair whose target distance is 0
    gets contributions and shares 0 with a :class:`ZeroDistanceWarning`.

    Args:
        model: Any ``nn.Module`` mapping ``(B,3,H,W)`` images to ``(B,D)`` embeddings (in eval mode).
        attributes: ``None`` (inferred from the label width at :meth:`fit`: 26 -> Market-1501,
            23 -> DukeMTMC, 18 -> shared, other widths -> generic names), a schema name, an
            :class:`~reidexplain.attributes.AttributeSchema` or a list of attribute names.
        metric: ``"euclidean"`` (not squared) or ``"cosine"``: the distance the model is used with.
        feature_layer: ``"auto"`` (the last image-grid feature map whose head runs alone), a module
            name, a module of ``model``, or ``None`` for black-box mode (the interpreter learns its own
            trunk and head).
        device: Where the copy and the interpreter run. Default: the model's device.
        recipe: The training recipe, by name or as an instance (:mod:`reidexplain.interpreter.recipes`).
            ``"amd-subspace"`` (default): the target's own distance split exactly, for any model, into
            non-negative parts along attribute subspaces of its embedding and an unexplained rest, with
            maps located by attribute recognition (``docs/how-amd-works.md``). ``"amd"``: the paper's
            losses. ``"amd+"``: a model-aware prior, shared maps and probes (``docs/truthful-amd.md``).
            ``"amd-linear"``: the distance split over the image by maps that sum to 1.
        hidden: The recipe's decomposition-head width (AMD: 256); ``None`` keeps the recipe's.
        trunk: The recipe's trunk, ``"copy"`` (AMD: the interpreter trains its own copy of the target's
            trunk) or ``"shared"`` (it reads the target's own feature map: one trunk pass less per image
            in :meth:`fit` and :meth:`explain`; with the default recipe only the maps change: on the
            ground-truth benchmark the same pointing and relevance mass of the share-weighted map,
            43 times faster per pair than Integrated Gradients against 27, but per-attribute pointing
            83 % against 89 % in one full fit; with the paper's, at some cost in X-mAP); ``None``
            keeps the recipe's.
        method: Deprecated name of ``recipe``.
        output: For a model that returns a tuple or a dict (SOLIDER's ``(feat, featmaps)``,
            fast-reid's dicts): which part is the embedding, as an index, a key, or a callable on the
            output. ``None``: the model returns the embedding.
        side_inputs: Per-image forward arguments the model needs besides the images, each read from a
            batch field: ``{"cam_label": "camid"}`` for TransReID's camera embedding (fields
            ``"camid"`` or ``"pid"``). :meth:`explain` and :meth:`explain_matrix` then take their values
            as ``forward_kwargs``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; a bad ``feature_layer``, ``attributes`` or
            ``recipe`` type.
        ValueError: unknown ``metric``, schema name, ``trunk`` or recipe name; a model whose parameters
            are on several devices or on the meta device.

    Examples:
        >>> from torch import nn
        >>> explainer = Explainer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), attributes="market1501")
        >>> explainer.is_fitted, len(explainer.schema), explainer.recipe.name
        (False, 26, 'amd-subspace')
    """

    def __init__(self, model: nn.Module, attributes: str | AttributeSchema | Sequence[str] | None = None,
                 metric: str = "euclidean", feature_layer: str | nn.Module | None = "auto",
                 device: torch.device | str | None = None, recipe: str | Recipe = DEFAULT_RECIPE,
                 hidden: int | None = None, trunk: str | None = None, method: str | None = None,
                 output: int | str | Callable[[Any], torch.Tensor] | None = None,
                 side_inputs: dict[str, str] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if feature_layer is not None and not isinstance(feature_layer, (str, nn.Module)):
            raise TypeError(
                f"feature_layer: expected a module name, an nn.Module, 'auto' or None, got {type(feature_layer).__name__}"
            )
        if method is not None:
            warnings.warn("Explainer(method=...) is deprecated: the training variant is now called the "
                          "recipe; pass recipe=...", DeprecationWarning, stacklevel=2)
            recipe = method
        architecture = {k: v for k, v in (("hidden", hidden), ("trunk", trunk)) if v is not None}
        self.recipe: Recipe = create_recipe(recipe, **architecture)
        if output is not None and (isinstance(output, bool) or not (isinstance(output, (int, str))
                                                                     or callable(output))):
            raise TypeError(f"output: expected an index, a key or a callable, got {type(output).__name__}")
        self.output = output
        self.side_inputs = dict(side_inputs or {})
        for name, field in self.side_inputs.items():
            if field not in _SIDE_FIELDS or not isinstance(name, str):
                raise ValueError(f"side_inputs: expected {{forward argument: one of {list(_SIDE_FIELDS)}}}, got "
                                 f"{{{name!r}: {field!r}}}")
        self.model = model
        self.metric = check_metric(metric)
        self.feature_layer = feature_layer
        self._schema = None if attributes is None else get_schema(attributes)
        model_device = check_model_devices(model, "model")
        if device is None:
            device = model_device or torch.device("cpu")
        self.device = torch.device(device)
        if self.device.type == "meta":
            raise ValueError("device: expected a device with data (cpu, cuda, ...), got 'meta'")
        self.amd: AMDModel | None = None
        self.config = TrainingConfig()
        self.history: list[dict[str, float]] = []
        self.input_size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ state
    @property
    def schema(self) -> AttributeSchema | None:
        """The attribute schema (``None`` until known)."""
        return self._schema

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """Names of the ``M`` attributes."""
        self._require_fitted("attribute_names")
        return self._schema.names

    @property
    def is_fitted(self) -> bool:
        """Whether an interpreter is ready (after :meth:`fit` or :meth:`load`)."""
        return self.amd is not None

    @property
    def adapter(self) -> FeatureAdapter | None:
        """How the target is split (``None`` before :meth:`fit`)."""
        return None if self.amd is None else self.amd.adapter

    @property
    def network(self) -> nn.Module | None:
        """The interpreter network (``None`` before :meth:`fit`)."""
        return None if self.amd is None else self.amd.network

    @property
    def mode(self) -> str | None:
        """``"gray-box"`` or ``"black-box"`` once fitted, else ``None``."""
        if self.amd is None:
            return None
        return "gray-box" if self.amd.gray_box else "black-box"

    def __repr__(self) -> str:
        how = self.amd.adapter.describe() if self.amd is not None else "not fitted"
        name = self._schema.name if self._schema is not None else "inferred at fit"
        return (f"Explainer({type(self.model).__name__}, attributes={name!r}, metric={self.metric!r}, "
                f"recipe={self.recipe.name!r}, {how})")

    def _require_fitted(self, what: str) -> AMDModel:
        if self.amd is None:
            raise NotFittedError(f"Explainer.{what}: the interpreter is not fitted; call fit(loader) first "
                                 "or Explainer.load(path, model)")
        return self.amd

    def _dtype(self) -> torch.dtype:
        """The model's floating-point dtype (images of another float dtype are cast to it)."""
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)

    def _images(self, images: object, name: str) -> torch.Tensor:
        return check_images(images, name, size=self.input_size, dtype=self._dtype())

    def _build(self, probe: torch.Tensor, num_attributes: int, batch: Any = None) -> AMDModel:
        if self._schema is None:
            self._schema = get_schema(None, num_attributes=num_attributes)
        side = None
        if self.side_inputs:
            side = {}
            for name, field in self.side_inputs.items():
                values = None if batch is None else getattr(batch, f"{field}s", None)
                if values is None:
                    raise ValueError(f"side_inputs: {name!r} is read from the batches' {field!r}, and the first "
                                     "batch has none")
                side[name] = values[: probe.shape[0]]
        adapter = adapt_model(self.model, probe, self.feature_layer, self.device, output=self.output,
                              side_inputs=side)
        logger.info("AMD: %s", adapter.describe())
        self.input_size = (int(probe.shape[-2]), int(probe.shape[-1]))
        return AMDModel(adapter, self.recipe, self._schema, self.metric, side_fields=tuple(self.side_inputs.values()))

    def _side(self, kwargs: dict[str, Any] | None, n: int, name: str) -> tuple[torch.Tensor, ...]:
        """The side inputs of ``n`` images from ``kwargs`` (``{forward argument: (n,) values}``)."""
        if not self.side_inputs:
            if kwargs:
                raise ValueError(f"{name}: the explainer was made without side_inputs; the model takes the images "
                                 "alone")
            return ()
        missing = sorted(set(self.side_inputs) - set(kwargs or {}))
        if missing:
            raise ValueError(f"{name}: the model needs {missing} for every image; pass {name}={{...}} with a "
                             f"({n},) tensor each")
        out = []
        for key in self.side_inputs:
            value = torch.as_tensor(kwargs[key])
            if value.shape[:1] != (n,):
                raise ValueError(f"{name}[{key!r}]: expected {n} values (one per image), got shape "
                                 f"{tuple(value.shape)}")
            out.append(value.to(self.device))
        return tuple(out)

    def _field_side(self, ids: Any, camids: Any, n: int, what: str) -> tuple[torch.Tensor, ...]:
        """The side inputs of ``n`` images read from their identities and cameras (``side_inputs`` maps
        each forward argument to one of those fields)."""
        if not self.side_inputs:
            return ()
        given = {"pid": (ids, "ids"), "camid": (camids, "camids")}
        out = []
        for name, field in self.side_inputs.items():
            values, argument = given[field]
            if values is None:
                raise ValueError(f"{what}: the model needs {name!r} for every image, read from its {field!r}; "
                                 f"pass {argument}= or batches with {field!r}")
            out.append(_as_ids(values, f"{what} {argument}", n).to(self.device))
        return tuple(out)

    # ------------------------------------------------------------------ fit
    def fit(self, loader: Iterable, epochs: int | None = None, lr: float = 1e-4, progress: bool = True,
            seed: int = 0,
            checkpoint: str | Path | None = None, checkpoint_every: int = 100, **options: Any) -> Explainer:
        """Fit the interpreter to the target on ``loader``.

        Args:
            loader: Re-iterable batches: dicts with ``"image"`` ``(B,3,H,W)`` and ``"attributes"``
                ``(B,M)`` (optional ``"pid"``, ``"camid"``), or tuples ``(images, attributes)`` /
                ``(images, pids, attributes)``. Labels 0/1; -1/+1 and the 1/2 of ``.mat`` files are
                converted with a warning. Identity-balanced (PK) batches give same-person pairs too.
            epochs: Passes over the loader. Default ``None``: about 600 (black box: 1500)
                optimiser steps, at most 60 epochs.
            lr: Learning rate of the trunk; the decomposition head uses 10x (AMD-SPEC 5: 1e-4).
            progress: Show a progress bar with the running loss and ADRE.
            seed: Seed of everything random inside the call.
            checkpoint: A file for the fit's state, written every ``checkpoint_every`` steps and after
                every epoch; a fit that finds it goes on from it and ends where the uninterrupted fit
                would (same model, data order, seed and options). ``None``: nothing is written.
            checkpoint_every: Steps between two writes of ``checkpoint``.
            **options: Fields of :class:`~reidexplain.interpreter.TrainingConfig` (``weight_decay``,
                ``flip``, ``max_seconds``, ``target_steps``, ...) or of the recipe
                (``distillation_weight``, default 5 in gray-box and 50 in black-box mode;
                ``prior_weight``; AMD+'s ``probe_weight``, ``shared_maps``, ...). On the zoo's
                reference model these defaults give ADRE 1.7 %, X-mAP_e 81, X-mAP_c 98 in under 3
                minutes on 2 CPU cores.

        Returns:
            ``self``, fitted; :attr:`history` holds the per-epoch losses and ADRE.

        A fit that fails leaves the explainer in its last good state, and the error is re-raised (not
        swallowed): if an epoch completed, the explainer is fitted with the best completed epoch (its
        :attr:`history` holds the completed epochs, the last one marked ``"error": 1.0``); if none
        completed (or the error came before training, say from a bad first batch), the explainer is
        as it was before the call (unfitted, or the previous fit). ``Ctrl-C`` stops the fit without an
        error and keeps the best completed epoch.

        Raises:
            ValueError: empty loader, labels of the wrong width or not binary, every label unknown,
                images that are not finite or of another size than the first batch's, a model output
                that is not finite ``(B,D)``.
            TypeError: unknown options, bad batch formats, a one-shot iterator, integer images, a model
                output that is not a tensor (a tuple or dict: the message says how to select).
            Exception: whatever the loader raised mid-fit, re-raised.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> data = [{"image": torch.rand(4, 3, 8, 4), "attributes": torch.randint(0, 2, (4, 3))}]
            >>> len(Explainer(net).fit(data, epochs=3, progress=False).history)
            3
        """
        check_loader(loader, "loader")
        if isinstance(loader, Iterator):
            raise TypeError("loader: expected a re-iterable loader (a DataLoader or a list of batches), got a "
                            f"one-shot {type(loader).__name__}: the fit reads the first batch to split the "
                            "model, then every epoch")
        training_names, recipe_names = TrainingConfig.option_names(), self.recipe.option_names()
        unknown = sorted(set(options) - training_names - recipe_names)
        if unknown:
            raise TypeError(f"fit: unknown options {unknown}; expected TrainingConfig fields "
                            f"{sorted(training_names)} or fields of the {self.recipe.name!r} recipe "
                            f"{sorted(recipe_names)}")
        before = {k: getattr(self, k) for k in ("recipe", "config", "_schema", "amd", "history", "input_size")}
        history: list[dict[str, float]] = []
        amd = None
        try:
            recipe_options = {k: v for k, v in options.items() if k in recipe_names}
            if recipe_options:
                self.recipe = self.recipe.replace(**recipe_options)
            self.config = TrainingConfig(epochs=epochs, lr=lr,
                                         **{k: v for k, v in options.items() if k in training_names})
            first = next(iter(loader), None)
            if first is None:
                raise ValueError("loader: it yielded no batches (empty dataset?)")
            width = None if self._schema is None else len(self._schema)
            batch = unpack_batch(first, width)
            probe = batch.images[: min(4, batch.images.shape[0])].to(self._dtype())
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                amd = self._build(probe, batch.attributes.shape[1], batch)
            # Every batch must have the first batch's size (the size the interpreter is fitted on).
            checked = CheckedLoader(loader, "loader", len(self._schema), None, self._dtype(), require_known=True)
            data = target_pass(amd, checked, progress=progress) if self.recipe.needs_target_pass else None
            amd.prepared = self.recipe.prepare(amd, data, progress=progress)
            fit(amd, checked, self.config, progress=progress, seed=seed, history=history, checkpoint=checkpoint,
                checkpoint_every=checkpoint_every)
        except Exception as err:
            if amd is not None and history:
                history[-1]["error"] = 1.0
                self.amd, self.history = amd, history
                err.add_note("reidexplain: the explainer keeps the best completed epoch of this fit")
            else:
                for key, value in before.items():
                    setattr(self, key, value)
                err.add_note("reidexplain: the explainer is left as it was before this fit")
            raise
        self.history = history
        self.amd = amd
        return self

    # ------------------------------------------------------------------ explain
    def embed(self, images: torch.Tensor, batch_size: int = 64,
              forward_kwargs: dict[str, Any] | None = None) -> Components:
        """Per-image target embeddings, component embeddings ``e_k`` and low-resolution maps.

        Args:
            images: ``(N,3,H,W)`` or ``(3,H,W)``.
            batch_size: Images per forward pass (a large batch is processed in chunks of this size).
            forward_kwargs: The images' side inputs, ``{forward argument: (N,) values}`` (only for an
                explainer made with ``side_inputs``).

        Returns:
            A :class:`~reidexplain.interpreter.Components` on the explainer's device.

        Raises:
            NotFittedError: before :meth:`fit`.
            TypeError, ValueError: ``images`` is not a finite floating-point image batch of the fitted
                size; a bad ``batch_size``; the model's embeddings are not finite.
        """
        amd = self._require_fitted("embed")
        images = self._images(images, "images")
        side = self._side(forward_kwargs, images.shape[0], "forward_kwargs")
        return self._embed(amd, images, check_batch_size(batch_size), side)

    def _embed(self, amd: AMDModel, images: torch.Tensor, batch_size: int,
               side: tuple[torch.Tensor, ...] = ()) -> Components:
        out = amd.embed(images, batch_size, side)
        check_embeddings(out.embeddings, images.shape[0], "model output")
        return out

    def _zero_distances(self, parts: Decomposition, a: torch.Tensor, b: torch.Tensor) -> Decomposition:
        """Pairs of distance 0 get 0 everywhere, with a :class:`ZeroDistanceWarning`.

        A pair's distance is 0 when it is at most :data:`~reidexplain._checks.ZERO_DISTANCE` or when the
        two embeddings are equal (``a`` and ``b``: ``(P,D)`` for pairs, ``(Q,D)`` and ``(G,D)`` for a
        matrix, whose distances carry the rounding of a matrix product).
        """
        zero = parts.distance <= ZERO_DISTANCE
        # Candidates for equal embeddings, then checked exactly (never a (Q,G,D) tensor).
        scale = a.norm(dim=-1)[:, None] + b.norm(dim=-1)[None, :] if parts.distance.dim() == 2 else \
            a.norm(dim=-1) + b.norm(dim=-1)
        candidates = ((parts.distance <= 1e-3 * scale) & ~zero).nonzero(as_tuple=True)
        if candidates[0].numel():
            left = a[candidates[0]]
            right = b[candidates[-1]] if parts.distance.dim() == 2 else b[candidates[0]]
            zero[candidates] = (left == right).all(dim=-1)
        if not zero.any():
            return parts
        warnings.warn(f"{int(zero.sum())} of {zero.numel()} pairs: the distance is 0 (identical embeddings): "
                      "nothing to explain; their contributions and shares are 0", ZeroDistanceWarning,
                      stacklevel=3)
        keep = ~zero

        def zeroed(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return t * (keep if t.dim() == keep.dim() else keep[..., None])

        return Decomposition(*(zeroed(getattr(parts, f.name)) for f in dataclasses.fields(parts)))

    def explain(self, pair: tuple[torch.Tensor, torch.Tensor], batch_size: int = 32,
                forward_kwargs: tuple[dict[str, Any], dict[str, Any]] | None = None) -> PairAttribution:
        """Explain the target's distance between ``image_a`` and ``image_b`` (or ``B`` such pairs).

        Costs about two target forward passes plus the head on ``M`` masked maps per image (the trunk
        runs ``M`` more times for a model split with a hook).

        A pair whose target distance is 0 (two identical images, say: at most
        :data:`~reidexplain._checks.ZERO_DISTANCE`) has nothing to explain: its distance,
        contributions, ``d_hat`` and shares are 0, with a :class:`ZeroDistanceWarning`.

        Args:
            pair: ``(image_a, image_b)``, each ``(3,H,W)`` or ``(B,3,H,W)``, of the same shape and of the
                size the interpreter was fitted on.
            batch_size: Pairs per forward pass (a large batch is processed in chunks).
            forward_kwargs: For an explainer made with ``side_inputs``: ``(kwargs_a, kwargs_b)``, each
                ``{forward argument: (B,) values}`` (the cameras of ``image_a`` and ``image_b``, say).

        Returns:
            A :class:`~reidexplain.attribution.PairAttribution` with ``method="amd"``: ``distance`` and
            ``reconstructed`` ``(B,)``, ``contributions`` ``(B,M)`` and maps ``(B,M,H,W)`` (bilinear
            upsampling of the attribute maps); ``extras["maps_lowres"]`` holds the ``(B,M,h,w)`` maps.
            With the default recipe (``"amd-subspace"``) and ``"amd-linear"``, ``unexplained`` ``(B,)``
            is the part no attribute accounts for and ``contributions.sum(1) + unexplained`` is the
            distance; with the paper's (``"amd"``, ``"amd+"``) the contributions sum to ``reconstructed``
            (``d_hat``) and ``extras["component_distances"]`` holds the ``d_k``.

        Raises:
            NotFittedError: before :meth:`fit`.
            TypeError: not a pair of tensors; integer images; a bad ``batch_size``.
            ValueError: not a pair of image batches of equal shape, images that are not finite or of
                another size than at fit (both sizes are named), embeddings that are not finite.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> ex = Explainer(net).fit([(torch.rand(4, 3, 8, 4), torch.eye(4))], epochs=1, progress=False)
            >>> a = ex.explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4)))
            >>> torch.allclose(a.contributions.sum(1) + a.unexplained, a.distance, atol=1e-6)
            True
        """
        amd = self._require_fitted("explain")
        batch_size = check_batch_size(batch_size)
        a, b = check_pair(pair, "pair", size=self.input_size, dtype=self._dtype())
        n = a.shape[0]
        if forward_kwargs is not None and (not isinstance(forward_kwargs, (tuple, list)) or len(forward_kwargs) != 2):
            raise TypeError("forward_kwargs: expected a pair (kwargs_a, kwargs_b) of dicts of per-image values")
        kw_a, kw_b = forward_kwargs if forward_kwargs is not None else (None, None)
        side_a, side_b = self._side(kw_a, n, "forward_kwargs[0]"), self._side(kw_b, n, "forward_kwargs[1]")
        side = tuple(torch.cat([x, y]) for x, y in zip(side_a, side_b, strict=True))
        out = self._embed(amd, torch.cat([a, b]), 2 * batch_size, side)
        parts = self._zero_distances(amd.decompose_pairs(out[:n], out[n:]), out.embeddings[:n],
                                     out.embeddings[n:])
        low = out.maps
        up = amd.maps_to_image(low, tuple(a.shape[-2:]))
        return PairAttribution(
            method=self.recipe.name, images=(a.to(self.device), b.to(self.device)), distance=parts.distance,
            maps=(up[:n], up[n:]), attribute_names=self._schema.names, reconstructed=parts.reconstructed,
            contributions=parts.contributions, attribute_labels=self._schema.labels,
            extras={"maps_lowres": (low[:n], low[n:]), "component_distances": parts.component_distances,
                    "mode": self.mode, "recipe": self.recipe.name, "feature_layer": amd.adapter.layer,
                    "rest": parts.rest, "offset": parts.offset},
            unexplained=parts.unexplained,
        )

    def explain_matrix(self, query_images: torch.Tensor, gallery_images: torch.Tensor,
                       batch_size: int = 64, query_kwargs: dict[str, Any] | None = None,
                       gallery_kwargs: dict[str, Any] | None = None) -> MatrixExplanation:
        """AMD quantities for every query x gallery pair, from per-image embeddings computed once.

        Args:
            query_images: ``(Q,3,H,W)``.
            gallery_images: ``(G,3,H,W)``.
            batch_size: Images per forward pass (large batches are processed in chunks).
            query_kwargs: For an explainer made with ``side_inputs``: the queries' side inputs,
                ``{forward argument: (Q,) values}``.
            gallery_kwargs: The same for the gallery, ``(G,)`` values.

        Returns:
            A :class:`MatrixExplanation` (``(Q,G)`` distances, ``(Q,G,M)`` contributions); pairs of
            distance 0 get 0 contributions, with a :class:`ZeroDistanceWarning`.

        Raises:
            NotFittedError: before :meth:`fit`.
            TypeError, ValueError: as :meth:`embed`, naming ``query_images`` or ``gallery_images``.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> ex = Explainer(net).fit([(torch.rand(4, 3, 8, 4), torch.eye(4))], epochs=1, progress=False)
            >>> ex.explain_matrix(torch.rand(2, 3, 8, 4), torch.rand(5, 3, 8, 4)).contributions.shape
            torch.Size([2, 5, 4])
        """
        amd = self._require_fitted("explain_matrix")
        batch_size = check_batch_size(batch_size)
        query_images = self._images(query_images, "query_images")
        gallery_images = self._images(gallery_images, "gallery_images")
        q = self._embed(amd, query_images, batch_size, self._side(query_kwargs, len(query_images), "query_kwargs"))
        g = self._embed(amd, gallery_images, batch_size,
                        self._side(gallery_kwargs, len(gallery_images), "gallery_kwargs"))
        parts = self._zero_distances(amd.decompose_matrix(q, g), q.embeddings, g.embeddings)
        return MatrixExplanation(parts.distance, parts.reconstructed, parts.contributions, self._schema.names,
                                 parts.unexplained)

    def contributions_matrix(self, query_images: torch.Tensor, gallery_images: torch.Tensor,
                             batch_size: int = 64) -> torch.Tensor:
        """The ``(Q,G,M)`` contributions of :meth:`explain_matrix`.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> ex = Explainer(net).fit([(torch.rand(4, 3, 8, 4), torch.eye(4))], epochs=1, progress=False)
            >>> ex.contributions_matrix(torch.rand(1, 3, 8, 4), torch.rand(3, 3, 8, 4)).shape
            torch.Size([1, 3, 4])
        """
        return self.explain_matrix(query_images, gallery_images, batch_size).contributions

    # ------------------------------------------------------------------ ranked lists
    def index_gallery(self, gallery: torch.Tensor | Iterable, ids: Any = None, camids: Any = None,
                      store_maps: bool = True, batch_size: int = 64, progress: bool = True,
                      shard: bool = False) -> GalleryIndex:
        """Per-image quantities of a gallery, computed once: a :class:`~reidexplain.ranking.GalleryIndex`.

        Args:
            gallery: ``(G,3,H,W)`` images, or an iterable of batches (image tensors, dicts with
                ``"image"`` and optional ``"pid"``/``"camid"``, or tuples ``(images, ids, camids)``),
                so that a large gallery never has to be in memory at once.
            ids: ``(G,)`` identities (default: the batches' ``"pid"``, if any).
            camids: ``(G,)`` cameras (default: the batches' ``"camid"``, if any).
            store_maps: Keep the ``(G,M,h,w)`` low-resolution maps (``False`` bounds the index's size;
                the maps of the top-k can then be recomputed from the images at ranking time).
            batch_size: Images per forward pass.
            progress: Show a progress bar over the batches.
            shard: In a ``torch.distributed`` group of ``W > 1`` processes (``torchrun``), embed and keep
                only this process's contiguous part of the gallery (a
                :meth:`~reidexplain.ranking.GalleryIndex.shard`): of a tensor, its rows
                :func:`~reidexplain.ranking.shard_bounds`; of an iterable (which must have a ``len``),
                those batches (the others are skipped, not embedded; the processes then exchange their
                image counts). ``ids``/``camids`` are the whole gallery's. Every process must call it.
                Without a group of several processes it does nothing.

        Returns:
            The index, on the explainer's device; :meth:`~reidexplain.ranking.GalleryIndex.save` writes it.
            For an interpreter that decomposes distances linearly (``amd-subspace``, ``amd-linear``) it holds the
            images' rest-of-image parts too (:attr:`~reidexplain.ranking.GalleryIndex.rest`), which the
            rankings' linear rule needs.

        Raises:
            NotFittedError: before :meth:`fit`.
            TypeError, ValueError: not images; ids or camids of the wrong length.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> ex = Explainer(net).fit([(torch.rand(4, 3, 8, 4), torch.eye(4))], epochs=1, progress=False)
            >>> index = ex.index_gallery(torch.rand(6, 3, 8, 4), ids=[0, 0, 1, 1, 2, 2], progress=False)
            >>> len(index), tuple(index.components.shape), index.has_maps
            (6, (6, 4, 4), True)
        """
        from ._progress import progress_bar

        amd = self._require_fitted("index_gallery")
        world, rank = _process_group() if shard else (1, 0)
        total = offset = None
        if world > 1 and isinstance(gallery, torch.Tensor):
            total = check_images(gallery, "gallery").shape[0]
            if total < world:
                raise ValueError(f"gallery: {total} images cannot be cut into {world} non-empty shards")
            offset, stop = shard_bounds(total, rank, world)
            gallery = gallery[offset:stop]
        batches = ([(gallery, None, None, True)] if isinstance(gallery, torch.Tensor)
                   else ((*batch, True) for batch in _iter_images(gallery)))
        if world > 1 and not isinstance(gallery, torch.Tensor):
            if not hasattr(gallery, "__len__"):
                raise TypeError("gallery: index_gallery(..., shard=True) needs a tensor or an iterable with a "
                                f"len() (a DataLoader, a list), got {type(gallery).__name__}")
            if len(gallery) < world:
                raise ValueError(f"gallery: {len(gallery)} batches cannot be cut into {world} non-empty shards")
            first, last = shard_bounds(len(gallery), rank, world)
            batches = _numbered(batches, first, last)  # the other shards' batches are read, not embedded
        parts, batch_ids, batch_cams, size = [], [], [], None
        bar = progress_bar(total=None if not isinstance(gallery, torch.Tensor) else
                           -(-check_images(gallery, "gallery").shape[0] // batch_size),
                           desc="gallery", enabled=progress, unit="batch")
        seen = offset or 0  # where the next batch starts in the whole gallery (for its side inputs)
        try:
            for images, pid, camid, mine in batches:
                images = check_images(images, "gallery")
                n = images.shape[0]
                rows, seen = slice(seen, seen + n), seen + n
                if not mine:
                    continue
                size = tuple(images.shape[-2:])
                # The ids and cameras given for the whole gallery come first, as in the index below.
                side = () if not self.side_inputs else self._field_side(
                    pid if ids is None else _rows(ids, rows), camid if camids is None else _rows(camids, rows), n,
                    "gallery")
                for start, chunk in zip(range(0, n, batch_size), images.split(batch_size), strict=True):
                    out = amd.embed(chunk, batch_size, tuple(t[start:start + batch_size] for t in side))
                    parts.append(out._replace(maps=out.maps if store_maps else None, recognised=None))
                    bar.update(1)
                batch_ids.append(pid)
                batch_cams.append(camid)
        finally:
            bar.close()
        if not parts:
            raise ValueError("gallery: no images")
        emb = torch.cat([p.embeddings for p in parts])
        comps = torch.cat([p.components for p in parts])
        maps = torch.cat([p.maps for p in parts]) if store_maps else None
        # The linear decomposition needs the rest-of-image part of every gallery embedding.
        rest = torch.cat([p.rest for p in parts]) if parts[0].rest is not None else None
        if world > 1 and offset is None:  # batches: where this shard starts, from every shard's size
            sizes = _all_gather(torch.tensor([emb.shape[0]], dtype=torch.long))[:, 0].tolist()
            offset, total = sum(sizes[:rank]), sum(sizes)
        where = {} if world == 1 else {"offset": offset, "total": total}

        def joined(given: Any, found: list[Any], name: str) -> torch.Tensor | None:
            if given is not None:
                if where:  # the whole gallery's, cut to this shard
                    return _as_ids(given, name, total)[offset:offset + emb.shape[0]]
                return _as_ids(given, name, emb.shape[0])
            if found and all(f is not None for f in found):
                return _as_ids(torch.cat([torch.as_tensor(f).reshape(-1) for f in found]), name, emb.shape[0])
            return None

        return GalleryIndex(emb, comps, maps, joined(ids, batch_ids, "ids"), joined(camids, batch_cams, "camids"),
                            self._schema.names, amd.metric, model_fingerprint(amd), size, rest=rest, **where)

    def explain_ranking(self, query: torch.Tensor, gallery: torch.Tensor | GalleryIndex | Iterable, top_k: int = 10,
                        *, query_ids: Any = None, gallery_ids: Any = None, query_camids: Any = None,
                        gallery_camids: Any = None, gallery_images: torch.Tensor | None = None,
                        n_attributes: int = 3, exclude_same_camera: bool = True, max_memory_mb: float | None = None,
                        batch_size: int = 64, progress: bool = True, shard: bool = False) -> RankingExplanation:
        """Each query's top-k gallery matches, ranked by the target's distance, each explained by AMD.

        The matches are decomposed with the rule :meth:`explain` uses: AMD's, or, for an interpreter that
        decomposes distances linearly (``amd-subspace``, ``amd-linear``), the linear rule, whose signed
        contributions leave an unexplained part (:attr:`RankingExplanation.unexplained
        <reidexplain.ranking.RankingExplanation.unexplained>`); a match's contributions and unexplained
        part are those :meth:`explain` gives for the pair (query, match).

        Per-image components are computed once (the gallery's come from ``gallery`` if it is a
        :class:`~reidexplain.ranking.GalleryIndex`); the ``Q x G`` distances are computed in blocks and
        reduced to each query's top-k, and the ``M``-wise contributions are computed for those
        ``Q x top_k`` pairs only, so no ``Q x G x M`` tensor is ever made. The temporaries stay within
        ``max_memory_mb`` (default :data:`reidexplain.ranking.DEFAULT_MAX_MEMORY_MB`).

        Sharded galleries (``torchrun``): against a shard
        (:meth:`GalleryIndex.shard <reidexplain.ranking.GalleryIndex.shard>`, ``index_gallery(...,
        shard=True)``, or ``shard=True`` here with gallery images), this is a collective: every process
        passes the same queries and its own shard, ranks the queries against it, and the processes merge
        their top-k (:func:`~reidexplain.ranking.explain_topk_sharded`) into the whole gallery's, the same
        on every process and the same as one process gives on the whole gallery (ties by gallery index).
        Results name gallery images by their global index. The matches' maps are gathered from the
        processes that hold them. Write files from rank 0: :meth:`RankingExplanation.save_json
        <reidexplain.ranking.RankingExplanation.save_json>` of such a ranking writes only there.

        Args:
            query: ``(Q,3,H,W)`` or ``(3,H,W)`` query images.
            gallery: ``(G,3,H,W)`` images, a :class:`~reidexplain.ranking.GalleryIndex` (checked to come
                from this explainer), or an iterable of batches as for :meth:`index_gallery`.
            top_k: Matches per query.
            query_ids: ``(Q,)`` identities of the queries; with gallery ids, matches are marked correct
                or wrong.
            gallery_ids: ``(G,)`` identities of the gallery (default: a gallery index's own); for a
                shard, the whole gallery's.
            query_camids: ``(Q,)`` cameras of the queries; with ids and gallery cameras, gallery
                entries of the query's identity and camera are excluded (Market-1501 protocol) unless
                ``exclude_same_camera=False``.
            gallery_camids: ``(G,)`` cameras of the gallery (default: a gallery index's own).
            gallery_images: The gallery's images, for the maps of the top-k of an index that stores no
                maps (only the matched images are run; with shards, the whole gallery's images, each
                process running the matches it holds) and for :meth:`RankingExplanation.plot`.
            n_attributes: Leading attributes per match in the summaries.
            exclude_same_camera: Apply the Market-1501 exclusion when ids and camids are known.
            max_memory_mb: Bound on the temporaries of the ranking arithmetic.
            batch_size: Images per forward pass.
            progress: Show progress bars.
            shard: With gallery images or batches, index only this process's part of them
                (``index_gallery(..., shard=True)``) and merge as above; ignored for a gallery index.

        Returns:
            A :class:`~reidexplain.ranking.RankingExplanation`; after a sharded ranking its
            ``extras["shard"]`` holds ``rank``, ``world``, ``offset``, ``size`` and ``total``.

        Raises:
            NotFittedError: before :meth:`fit`.
            ValueError: ``top_k`` larger than the gallery, a gallery index of another model or schema
                (or, for ``amd-subspace``, ``amd-linear``, one without the rest-of-image parts), ids of the wrong
                length, shards that do not fit together (on every process alike).

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> ex = Explainer(net).fit([(torch.rand(4, 3, 8, 4), torch.eye(4))], epochs=1, progress=False)
            >>> ranking = ex.explain_ranking(torch.rand(2, 3, 8, 4), torch.rand(6, 3, 8, 4), top_k=3,
            ...                              query_ids=[0, 1], gallery_ids=[0, 0, 1, 1, 2, 2], progress=False)
            >>> tuple(ranking.contributions.shape), tuple(ranking.correct.shape)
            ((2, 3, 4), (2, 3))
            >>> bool((ranking.distance[:, 1:] >= ranking.distance[:, :-1]).all())
            True
        """
        amd = self._require_fitted("explain_ranking")
        query = check_images(query, "query")
        seconds = {"embed_gallery": 0.0}
        clock = time.perf_counter()
        if isinstance(gallery, GalleryIndex):
            gallery.check_compatible(self)
            index = gallery.to(amd.device) if gallery.embeddings.device != amd.device else gallery
        else:
            if isinstance(gallery, torch.Tensor) and gallery_images is None:
                gallery_images = check_images(gallery, "gallery")
            index = self.index_gallery(gallery, ids=gallery_ids, camids=gallery_camids, batch_size=batch_size,
                                       progress=progress, shard=shard)
            seconds["embed_gallery"] = time.perf_counter() - clock
        g = index.total
        part = slice(index.offset, index.offset + len(index))  # this process's rows of the whole gallery
        g_ids = _as_ids(gallery_ids, "gallery_ids", g)[part] if gallery_ids is not None else index.ids
        g_cams = _as_ids(gallery_camids, "gallery_camids", g)[part] if gallery_camids is not None else index.camids
        if g_ids is not index.ids or g_cams is not index.camids:
            index = dataclasses.replace(index, ids=g_ids, camids=g_cams)
        q_ids = _as_ids(query_ids, "query_ids", query.shape[0])
        q_cams = _as_ids(query_camids, "query_camids", query.shape[0])
        clock = time.perf_counter()
        q = amd.embed(query, batch_size, self._field_side(q_ids, q_cams, query.shape[0], "query"))
        seconds["embed_queries"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if index.is_shard:
            idx, parts, match_ids = explain_topk_sharded(
                q.embeddings, q.components, index, top_k, query_rest=q.rest, query_ids=q_ids,
                query_camids=q_cams, exclude_same_camera=exclude_same_camera, max_memory_mb=max_memory_mb,
                progress=progress)
            match_ids = None if match_ids is None else match_ids.cpu()
        else:
            idx, parts = explain_topk(q.embeddings, q.components, index, top_k, query_rest=q.rest, query_ids=q_ids,
                                      query_camids=q_cams, exclude_same_camera=exclude_same_camera,
                                      max_memory_mb=max_memory_mb, progress=progress)
            match_ids = None if g_ids is None else torch.where(idx.cpu() >= 0, g_ids[idx.clamp_min(0).cpu()], -1)
        valid = idx >= 0
        correct = None
        if match_ids is not None and q_ids is not None:
            correct = valid.cpu() & (match_ids == q_ids[:, None])
        used, slots = _unique_slots(idx)
        seconds["ranking"] = time.perf_counter() - clock
        clock = time.perf_counter()
        match_maps = None
        images = None if gallery_images is None else check_images(gallery_images, "gallery_images")
        if images is not None and images.shape[0] != g:
            raise ValueError(f"gallery_images: expected {g} images (the gallery's size), got {images.shape[0]}")
        if index.is_shard:
            # Every process must take the same branch of the collective: agree on what is available.
            have = _all_gather(torch.tensor([index.maps is not None, images is not None], dtype=torch.long))
            if bool(have[:, 0].all()) or bool(have[:, 1].all()):
                offset = index.offset
                match_maps = shard_match_maps(
                    index, used, tuple(q.maps.shape[1:]),
                    None if index.maps is not None else
                    (lambda rows: self._gallery_maps(amd, images[(rows + offset).cpu()], index, rows, batch_size)))
        elif index.maps is not None:
            match_maps = index.maps[used]
        elif images is not None:
            match_maps = self._gallery_maps(amd, images[used.cpu()], index, used, batch_size)
        seconds["maps"] = time.perf_counter() - clock
        extras: dict[str, Any] = {"seconds": seconds, "index_bytes": index.nbytes}
        if index.is_shard:
            world, rank = _process_group()
            extras["shard"] = {"rank": rank, "world": world, "offset": index.offset, "size": len(index),
                               "total": index.total}
        size = tuple(query.shape[-2:])
        # An empty slot's distance is inf: its unexplained part is 0, as its contributions are.
        unexplained = None if parts.unexplained is None else parts.unexplained.masked_fill(~valid, 0.0)
        return RankingExplanation(
            idx, parts.distance, parts.reconstructed, parts.contributions, self._schema.names,
            self._schema.labels, query_ids=q_ids, gallery_ids=match_ids, correct=correct, query_maps=q.maps,
            match_maps=match_maps, match_slots=slots, image_size=size, query_images=query,
            gallery_images=gallery_images, n_attributes=n_attributes, upsample=amd.maps_to_image,
            extras=extras, unexplained=unexplained)

    def _gallery_maps(self, amd: AMDModel, images: torch.Tensor, index: GalleryIndex, rows: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
        """The maps of the gallery images ``rows`` of ``index`` (their side inputs from its ids and cameras)."""
        rows = rows.cpu()
        pick = (lambda t: None if t is None else t.cpu()[rows])  # noqa: E731
        side = self._field_side(pick(index.ids), pick(index.camids), len(rows), "gallery")
        return amd.embed(images, batch_size, side).maps

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, query_loader: Iterable, gallery_loader: Iterable, progress: bool = True) -> dict[str, float]:
        """Explanation and retrieval metrics over all query x gallery pairs (an image with itself excluded).

        Args:
            query_loader: Batches as for :meth:`fit`; pids and camids are needed for the retrieval scores.
            gallery_loader: Same; may be the same object as ``query_loader``.
            progress: Show progress bars.

        Returns:
            ``x_map_e``, ``x_map_c``, ``adre`` (percent), ``num_pairs``, and with pids:
            ``rank1_target``, ``rank5_target``, ``map_target``, ``rank1_interpreter``,
            ``rank5_interpreter``, ``map_interpreter`` (percent; Market-1501 protocol: gallery images with
            the query's pid and camera are ignored; without camids, every query is treated as coming from
            a camera of its own, so only an image with itself is ignored).

        No score is NaN: a score with nothing to be computed on (X-mAP_e without a pair that has an
        exclusive attribute, the retrieval scores without a query whose identity is in the gallery from
        another camera) is left out, with a warning naming it.

        Raises:
            NotFittedError: before :meth:`fit`.
            TypeError: a loader that is not an iterable of batches, or bad batches (named
                ``query_loader`` or ``gallery_loader``).
            ValueError: empty loaders, labels of the wrong width, images that are not finite or of
                another size than at fit, no pair other than an image with itself.
        """
        amd = self._require_fitted("evaluate")
        size, dtype, width = self.input_size, self._dtype(), len(self._schema)
        query_checked = CheckedLoader(query_loader, "query_loader", width, size, dtype)
        query = embed_loader(amd, query_checked, progress, "query")
        if gallery_loader is query_loader:
            gallery = query
        else:
            gallery = embed_loader(amd, CheckedLoader(gallery_loader, "gallery_loader", width, size, dtype),
                                   progress, "gallery")
        for name, part in (("query_loader", query), ("gallery_loader", gallery)):
            embeddings = part["components"].embeddings
            check_embeddings(embeddings, embeddings.shape[0], f"model output on {name}")
        scores, dist, recon = score_query_gallery(amd, query, gallery, progress)
        if scores["num_pairs"] == 0:
            raise ValueError(
                f"query_loader, gallery_loader: expected at least one pair of different images, got "
                f"{dist.shape[0]} query and {dist.shape[1]} gallery images that are all the same image"
            )
        if query["pids"] is not None and gallery["pids"] is not None:
            scores.update(retrieval_scores(query, gallery, {"target": dist, "interpreter": recon}))
        missing = sorted(k for k, v in scores.items() if isinstance(v, float) and math.isnan(v))
        if missing:
            warnings.warn(f"Explainer.evaluate: {missing} had nothing to be computed on (no pair with an "
                          "exclusive attribute, or no query whose identity is in the gallery from another "
                          "camera): left out of the result", UserWarning, stacklevel=2)
        return {k: v for k, v in scores.items() if k not in missing}

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> None:
        """Write the fitted interpreter to one file (``torch.save`` of a plain dict).

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        self._require_fitted("save")
        from .interpreter._checkpoint import checkpoint_dict

        torch.save(checkpoint_dict(self, FORMAT_VERSION), Path(path))

    @classmethod
    def load(cls, path: str | Path, model: nn.Module,
             attributes: str | AttributeSchema | Sequence[str] | None = None,
             device: torch.device | str | None = None,
             output: int | str | Callable[[Any], torch.Tensor] | None = None) -> Explainer:
        """Load an interpreter saved by :meth:`save` for ``model`` (re-split and checked).

        Args:
            path: File written by :meth:`save`.
            model: The target model it was fitted to (same architecture).
            attributes: Optional: the schema the caller expects; must equal the saved one.
            device: Where to run. Default: the model's device.
            output: The output selection (see the class); default: the one saved (an index or a key;
                a callable is not saved and must be given again).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an interpreter file (random bytes, a truncated file, a pickle of objects that
                ``torch.load(weights_only=True)`` refuses: nothing of it is run), a damaged one, another
                format version, another schema, an unknown recipe, or a model of another architecture.
        """
        from .interpreter._checkpoint import restore

        return restore(cls, Path(path), model, attributes, device, FORMAT_VERSION, output)

