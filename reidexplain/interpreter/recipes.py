"""Training recipes: what an interpreter network looks like and which losses train it.

A recipe is a frozen dataclass. Its fields are the interpreter's configuration (architecture switches
and loss weights), fixed at construction; the optimiser's hyper-parameters live in
:class:`~reidexplain.interpreter.training.TrainingConfig`. The training loop asks a recipe to

* :meth:`Recipe.build_network` for a target adapter and a schema;
* :meth:`Recipe.prepare` from one pass of the target over the training data (only if
  :attr:`Recipe.needs_target_pass`), returning what it derives (saved with the model);
* :meth:`Recipe.warmup` before the main loop (optional);
* :meth:`Recipe.losses` on every batch.

:class:`PaperAMD` (``"amd"``) is the paper's recipe; :class:`AMDPlus` (``"amd+"``) adds model-aware terms
(see ``docs/truthful-amd.md``). A new recipe is one class registered in :data:`RECIPES`.

Examples:
    >>> RECIPES.names()
    ['amd', 'amd+', 'amd-linear', 'amd-subspace']
    >>> recipe = create_recipe("amd+", probe_weight=0.5)
    >>> recipe.name, recipe.probe_weight, recipe.shared_maps
    ('amd+', 0.5, True)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress_bar
from ..adapters import FeatureAdapter
from ..attributes import AttributeSchema
from ..distance import pair_distance
from ..registry import Registry
from .losses import (
    agreeing_pairs_cap_loss,
    attribute_prior_loss,
    concentration_loss,
    metric_distillation_loss,
)
from .model_aware import (
    AttributeProbes,
    attribute_usage,
    map_entropy_loss,
    model_aware_prior_loss,
    probe_loss,
    recognition_loss,
)
from .network import SHARPNESS_INIT, AMDInterpreter, EmbeddingHead, SmallTrunk, region_slots
from .subspace import (
    SUBSPACE_INITS,
    USAGE_MEASURES,
    AttributeSubspaces,
    direction_usage,
    fit_subspaces,
)

if TYPE_CHECKING:
    from .._batch import Batch
    from .model import AMDModel, Components

__all__ = ["Recipe", "PaperAMD", "AMDPlus", "LinearAMD", "LocatedByRecognition", "SubspaceAMD", "DEFAULT_RECIPE", "RECIPES", "create_recipe", "TargetPass",
           "GRAY_BOX_DISTILLATION_WEIGHT", "BLACK_BOX_DISTILLATION_WEIGHT", "BLACK_BOX_DIM", "TRUNKS"]

GRAY_BOX_DISTILLATION_WEIGHT = 5.0
"""Default ``w_md`` in gray-box mode: on the zoo's reference model, weight 3 gave X-mAP_e 83.0 but ADRE
3.7 %, weight 5 gave X-mAP_e 81.4 and ADRE 1.8 %, weight 10 X-mAP_e 77.0 and ADRE 0.7 %, weight 50
X-mAP_e 57.2 and ADRE 0.2 % (about 600 steps each; see ``docs/how-amd-works.md``)."""
BLACK_BOX_DISTILLATION_WEIGHT = 50.0
"""Default ``w_md`` in black-box mode, where ``d_hat`` does not start at ``d``: weight 50 gave Rank-1
with ``d_hat`` 42 % against 14 % at weight 5, at a similar ADRE (17 %)."""
BLACK_BOX_DIM = 256
"""Width of the black-box interpreter's own component embeddings."""
TRUNKS = ("copy", "shared")
"""``"copy"``: the interpreter trains its own copy of the target's trunk (AMD); ``"shared"``: it reads the
target's own feature map (frozen)."""


@dataclass
class TargetPass:
    """One pass of the frozen target over the training data, for :meth:`Recipe.prepare`.

    Attributes:
        embeddings: ``(N,D)`` target embeddings (CPU).
        attributes: ``(N,M)`` labels.
        pids: ``(N,)`` identities, or ``None`` when a batch had none.
        known: ``(N,M)`` bool, ``False`` where a label is unknown; ``None`` when all are known.
    """

    embeddings: torch.Tensor
    attributes: torch.Tensor
    pids: torch.Tensor | None
    known: torch.Tensor | None = None


@dataclass(frozen=True)
class Recipe:
    """Base of the training recipes; the paper's losses (AMD-SPEC section 4).

    Attributes:
        hidden: Width of the decomposition head's middle layer (AMD: 256).
        trunk: ``"copy"`` or ``"shared"`` (see :data:`TRUNKS`); gray box only.
        distillation_weight: Weight ``w_md`` of the distillation loss; ``None``:
            :data:`GRAY_BOX_DISTILLATION_WEIGHT` (5) or :data:`BLACK_BOX_DISTILLATION_WEIGHT` (50).
        prior_weight: Weight ``w_ap`` of the attribute prior (its terms carry 2/10/10 already).
    """

    name: ClassVar[str] = "recipe"
    label: ClassVar[str] = "recipe"
    needs_target_pass: ClassVar[bool] = False
    black_box_head: ClassVar[bool] = True
    """Whether a black-box interpreter has its own embedding head (the components are its outputs)."""

    saved_before: ClassVar[dict[str, Any]] = {}
    """Options added after the recipe's first release, with the values that rebuild a file saved before
    them exactly as it was fitted (a file that lacks an option gets these, not today's defaults)."""

    hidden: int = 256
    trunk: str = "copy"
    distillation_weight: float | None = None
    prior_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            raise ValueError(f"trunk: expected one of {TRUNKS}, got {self.trunk!r}")
        if int(self.hidden) < 1:
            raise ValueError(f"hidden: expected a positive width, got {self.hidden}")

    # ------------------------------------------------------------------ configuration
    def options(self) -> dict[str, Any]:
        """The recipe's fields as a plain dict (saved with the model)."""
        return dataclasses.asdict(self)

    @classmethod
    def option_names(cls) -> set[str]:
        """Names of the fields a caller may set."""
        return {f.name for f in dataclasses.fields(cls)}

    def replace(self, **options: Any) -> Recipe:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        unknown = sorted(set(options) - self.option_names())
        if unknown:
            raise TypeError(f"recipe {self.name!r}: unknown options {unknown}; "
                            f"expected {sorted(self.option_names())}")
        return dataclasses.replace(self, **options)

    def distillation_weight_for(self, gray_box: bool) -> float:
        """``w_md``, with the mode's default filled in."""
        if self.distillation_weight is not None:
            return float(self.distillation_weight)
        return GRAY_BOX_DISTILLATION_WEIGHT if gray_box else BLACK_BOX_DISTILLATION_WEIGHT

    # ------------------------------------------------------------------ the network
    def slots(self, schema: AttributeSchema) -> list[int] | None:
        """Region of each attribute for gated, shared maps; ``None``: one free map per attribute."""
        return None

    def build_network(self, adapter: FeatureAdapter, schema: AttributeSchema) -> AMDInterpreter:
        """The interpreter network for ``adapter``'s target: gray box, a trainable copy of its trunk
        (``trunk="copy"``) or none (``"shared"``); black box, :class:`SmallTrunk` and its own head."""
        slots = self.slots(schema)
        options = self.map_options(adapter) if slots is not None else {}
        if adapter.gray_box:
            assert adapter.grid_shape is not None
            own = adapter.make_trunk() if self.trunk == "copy" else None
            network = AMDInterpreter(own, adapter.grid_shape[0], len(schema), self.hidden, slots=slots, **options)
        else:
            small = SmallTrunk()
            head = EmbeddingHead(small.out_channels, BLACK_BOX_DIM) if self.black_box_head else None
            network = AMDInterpreter(small, small.out_channels, len(schema), self.hidden, embedding_head=head,
                                     slots=slots, **options)
        return network.to(adapter.device)

    def map_options(self, adapter: FeatureAdapter) -> dict[str, Any]:
        """Options of shared maps (``logit_cap``, ``fixed_pooling``, ``cell_norm``, ``sharpness`` of
        :class:`~reidexplain.interpreter.AttributeDecomposition`) for ``adapter``'s target; none by default."""
        return {}

    # ------------------------------------------------------------------ training
    def prepare(self, model: AMDModel, data: TargetPass | None, progress: bool = False) -> dict[str, Any]:
        """What the recipe derives from the training data before training (saved with the model);
        ``progress``: show a progress bar on long work."""
        return {}

    def warmup(self, model: AMDModel, batches: Callable[[], Iterable[Batch]], lr: float,
               augment: Callable[[torch.Tensor], torch.Tensor], progress: bool,
               deadline: float | None, planned: int | None = None) -> None:
        """Optional training before the main loop (nothing by default); ``planned``: the main loop's steps."""

    def not_distributable(self) -> str | None:
        """Why this recipe cannot be fitted across processes as configured (``None``: it can)."""
        return None

    def losses(self, model: AMDModel, out: Components, attributes: torch.Tensor,
               context: dict[str, Any], known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms over all pairs ``i < j`` of a batch; ``"loss"`` is what is minimised.

        Args:
            model: The model being trained (its schema, metric and prepared data).
            out: The batch's :class:`~reidexplain.interpreter.model.Components`.
            attributes: ``(B,M)`` 0/1 labels.
            context: Per-fit state the recipe may keep (training-only modules and their optimisers
                under ``"optimizers"``, which the loop steps after each backward pass; a module under
                ``"probes"`` is saved with the fit's state, and on the first step of a resumed fit
                ``context["resume"]`` holds that state).
            known: ``(B,M)`` bool, ``False`` where a label is unknown (``None``: all known); a pair's
                entry counts only if it is known in both images.

        Returns:
            ``{"loss", "distillation", "prior", "distance", "reconstructed", ...}``; the last two are the
            ``(P,)`` pair distances.
        """
        return pair_losses(out, attributes, model.metric, self.distillation_weight_for(model.gray_box),
                           self.prior_weight, known=known)


def pair_losses(out: Components, attributes: torch.Tensor, metric: str, distillation_weight: float,
                prior_weight: float, usage: torch.Tensor | None = None,
                known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """AMD's losses over all pairs ``i < j`` of a batch (the model-aware prior when ``usage`` is given).

    ``known`` ``(B,M)`` (``False``: the label is unknown) leaves a pair's attribute out of the prior
    unless it is known in both images.

    Every distance and loss term is symmetric in ``(i, j)``, so the mean over the ``B(B-1)/2`` unordered
    pairs equals the mean over the ordered pairs of AMD-SPEC section 4, at half the cost.

    Examples:
        >>> import torch
        >>> from reidexplain.interpreter.model import Components
        >>> e = torch.rand(3, 4)
        >>> out = Components(e, e[:, None].expand(3, 2, 4), torch.ones(3, 2, 1, 1))
        >>> losses = pair_losses(out, torch.tensor([[0, 1], [0, 1], [1, 1]]), "euclidean", 5.0, 1.0)
        >>> round(float(losses["distillation"]), 6)
        0.0
    """
    from ..decomposition import decompose

    emb, comps = out.embeddings, out.components
    b = emb.shape[0]
    i, j = torch.triu_indices(b, b, offset=1, device=emb.device)
    parts = decompose(pair_distance(emb[i], emb[j], metric), pair_distance(comps[i], comps[j], metric))
    exclusive = attributes[i] != attributes[j]
    md = metric_distillation_loss(parts.distance, parts.reconstructed)
    pair_known = None if known is None else (known[i], known[j])
    if usage is None:
        ap = attribute_prior_loss(parts.shares, exclusive, known=pair_known)
    else:
        ap = model_aware_prior_loss(parts.shares, exclusive, usage.to(parts.shares.device), known=pair_known)
    return {"loss": distillation_weight * md + prior_weight * ap, "distillation": md.detach(),
            "prior": ap.detach(), "distance": parts.distance.detach(),
            "reconstructed": parts.reconstructed.detach()}


@dataclass(frozen=True)
class PaperAMD(Recipe):
    """The paper's recipe: distillation and attribute prior, one free map per attribute.

    Examples:
        >>> PaperAMD().distillation_weight_for(gray_box=True)
        5.0
    """

    name: ClassVar[str] = "amd"
    label: ClassVar[str] = "AMD (paper)"


def measured_usage(given: tuple[float, ...] | None, model: AMDModel, data: TargetPass | None,
                   measure: str = "contrast") -> list[float]:
    """Usage weights ``w_k``: ``given``, else measured on the target pass, one of
    :data:`~reidexplain.interpreter.subspace.USAGE_MEASURES` (:func:`attribute_usage` or
    :func:`~reidexplain.interpreter.subspace.direction_usage`)."""
    if given is not None:
        usage = [float(w) for w in given]
    else:
        assert data is not None
        if measure == "directions":  # along the directions of the space the metric compares
            emb = F.normalize(data.embeddings, dim=1) if model.metric == "cosine" else data.embeddings
            weights = direction_usage(emb, data.attributes, data.pids, data.known)
        else:
            weights = attribute_usage(data.embeddings, data.attributes, model.metric, data.pids, known=data.known)
        usage = [round(float(w), 4) for w in weights]
    if len(usage) != len(model.schema):
        raise ValueError(f"usage_weights: expected {len(model.schema)} weights, got {len(usage)}")
    return usage


class LocatedByRecognition:
    """Shared maps located by attribute recognition: the warm-up and the loss that :class:`AMDPlus` and
    :class:`LinearAMD` share (their fields ``shared_maps``, ``recognition_weight``,
    ``recognition_warmup`` and ``recognition_lr`` configure it)."""

    shared_maps: bool
    recognition_weight: float
    recognition_warmup: int
    recognition_lr: float

    def slots(self, schema: AttributeSchema) -> list[int] | None:
        return region_slots(schema) if self.shared_maps else None

    @staticmethod
    def one_hot_groups(schema: AttributeSchema) -> list[list[int]]:
        """Indices of the schema's one-hot groups (saved with the model as ``prepared``)."""
        return [[schema.names.index(n) for n in schema.groups[g]] for g in schema.one_hot_groups]

    def not_distributable(self) -> str | None:
        if self.shared_maps and self.recognition_weight > 0 and self.recognition_warmup > 0:
            return ("the recognition warm-up runs on each process's batches alone; pass "
                    "recognition_warmup=0 to fit across processes")
        return None

    def recognition_term(self, model: AMDModel, out: Components, attributes: torch.Tensor,
                         known: torch.Tensor | None, losses: dict[str, torch.Tensor]) -> None:
        """Add the recognition loss on the shared maps to ``losses`` (in place), if it is on."""
        if self.recognition_weight > 0 and out.recognised is not None:
            term = self._recognition(out.recognised, attributes, model, known)
            losses["loss"] = losses["loss"] + self.recognition_weight * term
            losses["recognition"] = term.detach()

    def _recognition(self, recognised: torch.Tensor, attributes: torch.Tensor,
                     model: AMDModel, known: torch.Tensor | None = None) -> torch.Tensor:
        groups = [tuple(g) for g in model.prepared.get("one_hot_groups", [])]
        return sum(recognition_loss(logits, attributes, groups, known) for logits in recognised.unbind(1))

    warmup_within_fit: ClassVar[bool] = False
    """Whether the warm-up takes at most as many steps as the main loop (a short fit, a short warm-up)."""

    def warmup(self, model: AMDModel, batches: Callable[[], Iterable[Batch]], lr: float,
               augment: Callable[[torch.Tensor], torch.Tensor], progress: bool,
               deadline: float | None, planned: int | None = None) -> None:
        """Train the shared maps' head on attribute recognition alone, so that the maps know where the
        attributes are before they must split the distance. Counts in the fit's time limit."""
        head = model.network.decomposition
        limit = int(self.recognition_warmup)
        if self.warmup_within_fit and planned is not None:
            limit = min(limit, int(planned))
        if not head.shared or self.recognition_weight <= 0 or limit <= 0:
            return
        optimizer = torch.optim.Adam(head.parameters(), lr=self.recognition_lr)
        steps = 0
        with progress_bar(total=limit, enabled=progress, desc="maps warm-up",
                          unit="batch", dynamic_ncols=True) as bar:
            while steps < limit:
                seen = steps
                for batch in batches():
                    images = augment(batch.images.to(model.device))
                    with torch.no_grad(), model.adapter.bind(model.side_from_batch(batch)):
                        trunk = model.network.trunk
                        feats = trunk(images) if trunk is not None else model.adapter.grid(images)
                    _, recognised = head.decompose(feats, images)
                    known = None if batch.known is None else batch.known.to(model.device)
                    loss = self._recognition(recognised, batch.attributes.to(model.device), model, known)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                    if steps >= limit or (deadline is not None
                                                             and time.perf_counter() > deadline):
                        return
                if steps == seen:  # an empty loader: nothing to warm up on
                    return


@dataclass(frozen=True)
class AMDPlus(LocatedByRecognition, Recipe):
    """AMD+: explanations true to the model as well as to the labels (``docs/truthful-amd.md``).

    Attributes:
        model_aware_prior: Count attribute ``k`` as exclusive to the degree ``w_k`` of its measured use by
            the model (:func:`~reidexplain.interpreter.model_aware.attribute_usage`, from one pass of the
            target over the training data); ``False``: the paper's prior.
        usage_weights: Given ``w_k`` (skips that pass); ``None``: measured.
        shared_maps: Gated maps that share one spatial map per one-hot group (a garment's colours),
            see :class:`~reidexplain.interpreter.AttributeDecomposition`.
        probe_weight: Weight of the per-attribute probes on ``e_k`` (0: off).
        recognition_weight: With ``shared_maps``: weight of the attribute recognition loss on the
            features each region's map pools (0: off).
        entropy_weight: Weight of the maps' normalised spatial entropy (0: off).
        recognition_warmup: Steps of recognition alone before the AMD losses start (trunk frozen).
        recognition_lr: Learning rate of that warm-up.
    """

    name: ClassVar[str] = "amd+"
    label: ClassVar[str] = "AMD+"

    model_aware_prior: bool = True
    usage_weights: tuple[float, ...] | None = None
    shared_maps: bool = True
    probe_weight: float = 1.0
    recognition_weight: float = 1.0
    entropy_weight: float = 0.0
    recognition_warmup: int = 300
    recognition_lr: float = 3e-3

    @property
    def needs_target_pass(self) -> bool:  # type: ignore[override]
        return self.model_aware_prior and self.usage_weights is None

    def prepare(self, model: AMDModel, data: TargetPass | None, progress: bool = False) -> dict[str, Any]:
        schema = model.schema
        prepared: dict[str, Any] = {"one_hot_groups": self.one_hot_groups(schema)}
        if self.model_aware_prior:
            prepared["usage_weights"] = measured_usage(self.usage_weights, model, data)
        return prepared

    def losses(self, model: AMDModel, out: Components, attributes: torch.Tensor,
               context: dict[str, Any], known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        usage = model.prepared.get("usage_weights")
        losses = pair_losses(out, attributes, model.metric, self.distillation_weight_for(model.gray_box),
                             self.prior_weight, None if usage is None else torch.as_tensor(usage), known)
        if self.probe_weight > 0:
            if "probes" not in context:
                # Training-only classifiers: built once the width of e_k is known, never saved.
                net: nn.Module = AttributeProbes(attributes.shape[1], out.components.shape[-1])
                net = net.to(out.components.device)
                optimizer = torch.optim.Adam(net.parameters(), lr=context["lr"] * context["head_lr_factor"])
                saved = context.get("resume")  # a resumed fit: the probes go on from their saved state
                if saved is not None and saved.get("probes") is not None:
                    net.load_state_dict(saved["probes"])
                    optimizer.load_state_dict(saved["extra_optimizers"][0])
                context["probes"] = net
                context.setdefault("optimizers", []).append(optimizer)
            term = probe_loss(context["probes"](out.components), attributes, known)
            losses["loss"] = losses["loss"] + self.probe_weight * term
            losses["probe"] = term.detach()
        self.recognition_term(model, out, attributes, known, losses)
        if self.entropy_weight > 0:
            term = map_entropy_loss(out.maps)
            losses["loss"] = losses["loss"] + self.entropy_weight * term
            losses["entropy"] = term.detach()
        return losses


@dataclass(frozen=True)
class LinearAMD(LocatedByRecognition, Recipe):
    """The linear decomposition (AMD-SPEC section 11): the target's own distance, split exactly.

    The network gives ``M + 1`` maps that sum to 1 at every cell (the last one: the rest of the image).
    Each map's part of the embedding is the head's derivative along the masked grid,
    ``u_k = J_head(F) (F * A_k)`` (:meth:`~reidexplain.interpreter.model.AMDModel._linear_parts`); for
    a head that pools linearly (GAP, BNNeck, linear layers) the parts add up to the embedding, and for a
    positively homogeneous pooling (max, GeM) to first order. A pair's distance then splits into signed
    contributions of the attributes ``c_k = <u_k(a) - u_k(b), e_a - e_b> / d``, of the rest, and an
    ``offset`` (what the head does not split: zero for a linear head), with no distillation needed.

    Training only decides *where* each map looks: the paper's attribute prior on the shares ``c_k / d``
    (the rest counts in the denominator, so the attributes that differ must carry at least ``r`` of the
    distance and each common one at most ``t``), plus a term on the offset for heads that are not linear.

    Attributes:
        offset_weight: Weight of ``mean |offset| / mean d`` (0 for a linear head's exact split).
        step: Relative step of the forward difference that gives ``u_k``.
        rest_weight: Weight of the terms on the rest of the image: its share of ``d`` may not be
            negative, and on pairs whose labels all agree (two photos of one person, mostly) the
            attributes together may carry at most ``same_person_cap`` of ``d`` (0: off).
        same_person_cap: That bound.
        absent_weight: Weight of the mean area of the maps of attributes an image does not have
            (label 0, where known): the map of an attribute then shows where the image has it, and
            an attribute both images lack has no part of either (0: off).
        shared_maps: The attributes' maps are AMD+'s gated maps that share one spatial map per region
            (:func:`~reidexplain.interpreter.network.region_slots`), located by attribute recognition;
            the rest of the image keeps a map of its own, and the ``M + 1`` maps still sum to 1.
        recognition_weight: With ``shared_maps``: weight of the recognition loss (0: off).
        recognition_warmup: With ``shared_maps``: steps of recognition alone before the prior starts.
        recognition_lr: Learning rate of that warm-up.
        model_aware_prior: The prior counts attribute ``k`` as exclusive to the degree ``w_k`` of its
            measured use by the model (as :class:`AMDPlus` does); ``False``: the paper's prior.
        usage_weights: Given ``w_k`` (skips the pass of the target that measures them).
        concentration: With ``concentration_weight``: the least part of the attributes' contributions
            that the attributes whose labels differ should carry together, per pair of different labels.
        concentration_weight: Weight of ``ReLU(concentration * sum_k p_k - sum_{k differs} p_k)`` over
            those pairs, ``p_k = c_k / d`` (0: off).

    Examples:
        >>> LinearAMD().name, LinearAMD().step
        ('amd-linear', 0.01)
    """

    name: ClassVar[str] = "amd-linear"
    label: ClassVar[str] = "AMD, linear decomposition"

    offset_weight: float = 5.0
    step: float = 1e-2
    rest_weight: float = 0.0
    same_person_cap: float = 0.25
    absent_weight: float = 0.0
    shared_maps: bool = False
    recognition_weight: float = 1.0
    recognition_warmup: int = 300
    recognition_lr: float = 3e-3
    model_aware_prior: bool = False
    usage_weights: tuple[float, ...] | None = None
    concentration: float = 0.6
    concentration_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= float(self.concentration) <= 1.0:
            raise ValueError(f"concentration: expected a part in [0, 1], got {self.concentration}")

    @property
    def needs_target_pass(self) -> bool:  # type: ignore[override]
        return self.model_aware_prior and self.usage_weights is None

    def build_network(self, adapter: FeatureAdapter, schema: AttributeSchema) -> AMDInterpreter:
        if not adapter.gray_box:
            raise ValueError("recipe 'amd-linear': the linear decomposition needs the target's own head "
                             "(a gray-box split); this target has no feature layer")
        own = adapter.make_trunk() if self.trunk == "copy" else None
        assert adapter.grid_shape is not None
        network = AMDInterpreter(own, adapter.grid_shape[0], len(schema), self.hidden,
                                 slots=self.slots(schema), partition=True)
        return network.to(adapter.device)

    def prepare(self, model: AMDModel, data: TargetPass | None, progress: bool = False) -> dict[str, Any]:
        prepared: dict[str, Any] = {"one_hot_groups": self.one_hot_groups(model.schema)} if self.shared_maps else {}
        if self.model_aware_prior:
            prepared["usage_weights"] = measured_usage(self.usage_weights, model, data)
        return prepared

    def losses(self, model: AMDModel, out: Components, attributes: torch.Tensor,
               context: dict[str, Any], known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from ..decomposition import linear_pair_decomposition

        b = out.embeddings.shape[0]
        i, j = torch.triu_indices(b, b, offset=1, device=out.embeddings.device)
        parts = linear_pair_decomposition(out.embeddings[i], out.components[i], out.rest[i],
                                          out.embeddings[j], out.components[j], out.rest[j], model.metric)
        d = parts.distance.detach()
        shares = parts.contributions / d.clamp_min(1e-12).unsqueeze(-1)
        exclusive = attributes[i] != attributes[j]
        pair_known = None if known is None else (known[i], known[j])
        usage = model.prepared.get("usage_weights") if self.model_aware_prior else None
        if usage is None:
            prior = attribute_prior_loss(shares, exclusive, known=pair_known)
        else:
            prior = model_aware_prior_loss(shares, exclusive, torch.as_tensor(usage).to(shares), known=pair_known)
        offset = parts.offset.abs().mean() / d.mean().clamp_min(1e-12)
        loss = self.prior_weight * prior + self.offset_weight * offset
        logged = {"distillation": offset.detach(), "prior": prior.detach(), "distance": d,
                  "reconstructed": parts.reconstructed.detach()}
        if self.rest_weight > 0:
            rest_share = parts.rest / d.clamp_min(1e-12)
            term = (torch.relu(-rest_share).mean()
                    + agreeing_pairs_cap_loss(shares, exclusive, self.same_person_cap))
            loss = loss + self.rest_weight * term
            logged["rest"] = term.detach()
        if self.absent_weight > 0:
            absent = attributes == 0
            if known is not None:
                absent = absent & known
            area = out.maps.flatten(2).mean(dim=-1)  # (B,M) the part of the grid each map takes
            term = (area * absent).sum() / absent.sum().clamp_min(1)
            loss = loss + self.absent_weight * term
            logged["absent"] = term.detach()
        if self.concentration_weight > 0:
            differs = exclusive if known is None else exclusive & known[i] & known[j]
            term = concentration_loss(shares, differs, self.concentration)
            loss = loss + self.concentration_weight * term
            logged["concentration"] = term.detach()
        losses = {"loss": loss, **logged}
        self.recognition_term(model, out, attributes, known, losses)
        return losses


@dataclass(frozen=True)
class SubspaceAMD(LocatedByRecognition, Recipe):
    """Attribute subspaces: the target's distance split exactly along its embedding's directions.

    How much each attribute contributes comes from :class:`~reidexplain.interpreter.subspace.AttributeSubspaces`,
    fitted on the target's embeddings of the training images alone
    (:func:`~reidexplain.interpreter.subspace.fit_subspaces`): ``c_k = delta^T P_k delta / d >= 0`` and
    the rest's part add up to the target's own distance for any model, so ADRE is 0 up to float error,
    also in black-box mode. *Where* each attribute is comes from AMD+'s shared maps, trained on attribute
    recognition alone from each cell's own pixels (see
    :class:`~reidexplain.interpreter.AttributeDecomposition`): the maps locate the attributes; they do not
    split the distance over the pixels.

    Attributes:
        rank: Directions of the basis (default :data:`~reidexplain.interpreter.subspace.DEFAULT_RANK`, at
            most ``D``); the others go to the rest.
        subspace_steps: Optimiser steps of the subspace fit, at most; a small training set takes fewer
            (2 per training image, at least 100).
        subspace_lr: Its learning rate.
        subspace_init: Where that fit starts, one of
            :data:`~reidexplain.interpreter.subspace.SUBSPACE_INITS`: ``"regression"``, each attribute on
            the direction its label moves the embedding along (see
            :func:`~reidexplain.interpreter.subspace.fit_subspaces` for what it changed); ``"principal"``,
            the leading principal directions, shared equally.
        prior_weights: Weights of the prior's group, floor and cap terms in that fit (the paper's:
            ``(2, 10, 10)``; see :func:`~reidexplain.interpreter.subspace.fit_subspaces`).
        concentration: The part of the attributes' contributions that the differing attributes should
            carry, on pairs whose labels differ.
        concentration_weight: Weight of that term (0: off).
        same_person_cap: The most the attributes may carry on pairs whose labels all agree.
        same_person_weight: Weight of that term (0: off).
        model_aware_prior: The prior counts attribute ``k`` as exclusive to the degree of its measured use.
        usage_weights: Given usage weights (else measured when ``model_aware_prior``).
        usage_measure: How that use is measured, one of
            :data:`~reidexplain.interpreter.subspace.USAGE_MEASURES`: ``"contrast"``
            (:func:`~reidexplain.interpreter.model_aware.attribute_usage`) or ``"directions"``
            (:func:`~reidexplain.interpreter.subspace.direction_usage`, how far the embedding moves
            with the attribute). Measured on the reference model's embeddings (the subspace fit alone,
            3 fit seeds, ``benchmarks/bench_subspace_fit.py``): ``model_aware_prior=True,
            usage_measure="directions", concentration_weight=10`` raised attribute agreement from
            0.56 to 0.69 and X-mAP_e on the attributes the model uses from 89.7 to 91.4, and halved
            the share of ignored attributes (1.8 % to 0.8 %), at X-mAP_e 77.6 against 78.2, a
            differing attributes' part of 58.4 % against 61.2 % and an unexplained part of 74 %
            against 49 % of a different-person distance; so it is not the default.
        recognition_weight: Weight of the recognition loss that trains the maps (must be positive).
        recognition_warmup: Steps of recognition of the maps' head alone, at ``recognition_lr``, before
            the main loop (which goes on with it, trunk included); at most the main loop's steps.
        recognition_lr: Learning rate of that warm-up.
        map_logit_cap: Soft bound of the maps' spatial logits (``None``: unbounded), so that no region's
            attention saturates on one cell early in the fit.
        fixed_pooling: Whether the read-out's pooling leaves where the maps look untouched (only the
            per-cell evidence moves them). A lever that ``cell_norm`` made unnecessary: with both, the
            black-box maps of the reference model pointed less often than with ``cell_norm`` alone (31 %
            against 46 %, 120 s fits).
        cell_norm: Whether the maps read each cell's hidden features at unit root mean square, so that
            where a region looks does not follow the size of the activations (a CNN's border cells have
            the largest; without it every region of a BoT ResNet-18 looked at the corner).
        map_sharpness: Sharpness ``beta_k`` of the maps. Here the maps say where an attribute is and
            carry no part of the distance (no loss reaches their sharpness, which stays as set), so they
            can show their region's attention as it is: 1. AMD+'s 0.05, which starts its maps nearly
            flat, spread the share-weighted map's mass over the whole image (relevance mass 20 % against
            65 % at 1 on the reference model, one 150 s fit, 48 pairs; pointing unchanged).
        map_position: Whether each region also learns a prior logit map of where on the feature grid it
            lies (persons stand upright in ReID crops), zero at the start (gray box; a black box's grid
            is its own trunk's and has none). On the reference model, over 3 fit seeds, it raised the
            maps' pointing on the attributes the model uses from 82.5 to 86.2 % (48 pairs; 82.9 to
            85.9 % on 480 more) and their relevance mass from 68.7 to 70.9 %, on every seed
            (``benchmarks/bench_maps.py``); one seed on a BoT ResNet-18 pointed less often with it
            (49.5 against 55.9 %).

    Examples:
        >>> SubspaceAMD().name, SubspaceAMD().needs_target_pass
        ('amd-subspace', True)
    """

    name: ClassVar[str] = "amd-subspace"
    label: ClassVar[str] = "AMD, attribute subspaces"
    needs_target_pass: ClassVar[bool] = True
    shared_maps: ClassVar[bool] = True  # the maps are located by recognition, which needs shared maps
    warmup_within_fit: ClassVar[bool] = True
    black_box_head: ClassVar[bool] = False  # the components come from the target's own embedding

    rank: int | None = None
    subspace_steps: int = 1500
    subspace_lr: float = 1e-2
    subspace_init: str = "regression"
    prior_weights: tuple[float, float, float] = (2.0, 1.0, 10.0)
    concentration: float = 0.6
    concentration_weight: float = 5.0
    same_person_cap: float = 0.25
    same_person_weight: float = 2.0
    model_aware_prior: bool = False
    usage_weights: tuple[float, ...] | None = None
    usage_measure: str = "contrast"
    recognition_weight: float = 1.0
    recognition_warmup: int = 300
    recognition_lr: float = 3e-3
    map_logit_cap: float | None = 5.0
    fixed_pooling: bool = False
    cell_norm: bool = True
    map_sharpness: float = 1.0
    map_position: bool = True

    saved_before: ClassVar[dict[str, Any]] = {"map_logit_cap": None, "fixed_pooling": False, "cell_norm": False,
                                              "map_sharpness": SHARPNESS_INIT, "subspace_init": "principal",
                                              "map_position": False}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not float(self.map_sharpness) > 0:
            raise ValueError(f"map_sharpness: expected a positive sharpness, got {self.map_sharpness}")
        if self.map_logit_cap is not None and not float(self.map_logit_cap) > 0:
            raise ValueError(f"map_logit_cap: expected a positive bound or None, got {self.map_logit_cap}")
        if not 0.0 <= float(self.concentration) <= 1.0:
            raise ValueError(f"concentration: expected a part in [0, 1], got {self.concentration}")
        if len(self.prior_weights) != 3 or min(self.prior_weights) < 0:
            raise ValueError(f"prior_weights: expected 3 non-negative weights, got {self.prior_weights}")
        if not 0.0 <= float(self.same_person_cap) <= 1.0:
            raise ValueError(f"same_person_cap: expected a part in [0, 1], got {self.same_person_cap}")
        if self.distillation_weight is not None:
            raise ValueError("distillation_weight: 'amd-subspace' splits the target's own distance exactly and "
                             "distils nothing; use recipe='amd' for the paper's distillation")
        if float(self.recognition_weight) <= 0:
            raise ValueError("recognition_weight: the maps of 'amd-subspace' learn only from recognition; "
                             f"expected a positive weight, got {self.recognition_weight}")
        if self.usage_measure not in USAGE_MEASURES:
            raise ValueError(f"usage_measure: expected one of {USAGE_MEASURES}, got {self.usage_measure!r}")
        if self.subspace_init not in SUBSPACE_INITS:
            raise ValueError(f"subspace_init: expected one of {SUBSPACE_INITS}, got {self.subspace_init!r}")
        if int(self.subspace_steps) < 0 or (self.rank is not None and int(self.rank) < 1):
            raise ValueError(f"subspace_steps >= 0 and rank >= 1 expected, got {self.subspace_steps}, {self.rank}")

    def build_network(self, adapter: FeatureAdapter, schema: AttributeSchema) -> AMDInterpreter:
        network = super().build_network(adapter, schema)
        network.subspaces = AttributeSubspaces(adapter.embedding_dim, len(schema), self.rank)
        return network.to(adapter.device)

    def map_options(self, adapter: FeatureAdapter) -> dict[str, Any]:
        grid = adapter.grid_shape if adapter.gray_box else None
        positions = (int(grid[1]), int(grid[2])) if self.map_position and grid is not None else None
        return {"logit_cap": self.map_logit_cap, "fixed_pooling": bool(self.fixed_pooling),
                "cell_norm": bool(self.cell_norm), "sharpness": float(self.map_sharpness), "positions": positions}

    def prepare(self, model: AMDModel, data: TargetPass | None, progress: bool = False) -> dict[str, Any]:
        assert data is not None
        prepared: dict[str, Any] = {"one_hot_groups": self.one_hot_groups(model.schema)}
        usage = None
        if self.model_aware_prior:
            prepared["usage_weights"] = measured_usage(self.usage_weights, model, data, self.usage_measure)
            usage = torch.as_tensor(prepared["usage_weights"])
        spaces = model.network.subspaces
        fitted = AttributeSubspaces(spaces.basis.shape[1], spaces.num_attributes, spaces.basis.shape[0])
        stats = fit_subspaces(fitted, data.embeddings, data.attributes, model.metric, pids=data.pids,
                              known=data.known, usage=usage, lr=self.subspace_lr,
                              steps=self.fit_steps(data.embeddings.shape[0]),
                              prior_weight=self.prior_weight, prior_weights=tuple(self.prior_weights),
                              concentration=self.concentration,
                              concentration_weight=self.concentration_weight, same_cap=self.same_person_cap,
                              same_weight=self.same_person_weight, init=self.subspace_init,
                              progress=progress)
        spaces.load_state_dict(fitted.state_dict())
        prepared["subspace_fit"] = {key: round(value, 6) for key, value in stats.items()}
        return prepared

    def fit_steps(self, images: int) -> int:
        """Optimiser steps of the subspace fit on ``images`` training embeddings: 2 per image, at least
        100, at most :attr:`subspace_steps`.

        Examples:
            >>> SubspaceAMD().fit_steps(600), SubspaceAMD().fit_steps(10_000), SubspaceAMD().fit_steps(20)
            (1200, 1500, 100)
        """
        return min(int(self.subspace_steps), max(100, 2 * int(images)))

    def not_distributable(self) -> str | None:
        return ("'amd-subspace' fits its subspaces on one process's target pass; fit it in one process "
                "(the fit trains only the maps, on attribute recognition)")

    def losses(self, model: AMDModel, out: Components, attributes: torch.Tensor,
               context: dict[str, Any], known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from ..decomposition import linear_pair_decomposition

        b = out.embeddings.shape[0]
        i, j = torch.triu_indices(b, b, offset=1, device=out.embeddings.device)
        with torch.no_grad():  # logged only: the split is fixed, exact and has nothing to learn here
            parts = linear_pair_decomposition(out.embeddings[i], out.components[i], out.rest[i],
                                              out.embeddings[j], out.components[j], out.rest[j], model.metric)
        zero = out.embeddings.new_zeros(())
        losses = {"loss": zero, "distillation": zero, "prior": zero, "distance": parts.distance,
                  "reconstructed": parts.reconstructed}
        self.recognition_term(model, out, attributes, known, losses)
        return losses


DEFAULT_RECIPE = SubspaceAMD.name
"""The recipe :class:`~reidexplain.Explainer` fits unless told otherwise (chosen by measurement, see
``docs/how-amd-works.md``)."""

RECIPES: Registry[type[Recipe]] = Registry("recipe")
"""Training recipes by name."""
RECIPES.register(PaperAMD.name, PaperAMD, label=PaperAMD.label)
RECIPES.register(AMDPlus.name, AMDPlus, label=AMDPlus.label)
RECIPES.register(LinearAMD.name, LinearAMD, label=LinearAMD.label)
RECIPES.register(SubspaceAMD.name, SubspaceAMD, label=SubspaceAMD.label)


def create_recipe(recipe: str | Recipe, **options: Any) -> Recipe:
    """A recipe from its name (or a recipe instance) with some options changed.

    Raises:
        UnknownNameError: unknown name (a ``ValueError``).
        TypeError: options the recipe does not have, or ``recipe`` of a wrong type.
    """
    if isinstance(recipe, Recipe):
        return recipe.replace(**options) if options else recipe
    if not isinstance(recipe, str):
        raise TypeError(f"recipe: expected a name from {RECIPES.names()} or a Recipe, got {type(recipe).__name__}")
    cls = RECIPES.get(recipe)
    return cls().replace(**options) if options else cls()


def saved_recipe(name: str, options: dict[str, Any]) -> Recipe:
    """The recipe a saved interpreter was fitted with: ``options`` as saved, and each option the file
    predates at the value it had then (:attr:`Recipe.saved_before`), never at today's default.

    Raises:
        UnknownNameError: unknown name (a ``ValueError``).
        TypeError: options the recipe does not have.
    """
    cls = RECIPES.get(name)
    return create_recipe(name, **{**cls.saved_before, **options})
