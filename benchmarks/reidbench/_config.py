"""Sizes of the ground-truth benchmark: how much data, how many pairs, how long each fit may run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reidexplain.baselines import BASELINES

__all__ = ["BenchmarkSize", "SIZES", "get_size"]


@dataclass(frozen=True)
class BenchmarkSize:
    """Every size and budget of one benchmark run.

    The data always come from :func:`reidexplain.zoo.reference_splits` with ``num_train_ids``
    training identities (those the reference model was trained on) followed by ``num_test_ids`` test
    identities, so a smaller test set is a subset of the full one. The AMD interpreters are fitted on
    the first ``amd_train_ids`` training identities; ``val_ids`` fresh identities (neither training nor
    test: the reference model has seen every training identity) form a validation query/gallery split,
    used only to choose the re-weighting ``alpha`` (AMD-SPEC 7).

    Attributes:
        name: ``"full"``, ``"quick"``, ``"tiny"`` or a name of your own.
        num_train_ids: Training identities of the reference data (``None``: the reference config).
        num_test_ids: Test identities split into query and gallery (``None``: the reference config).
        images_per_id: Images per identity (``None``: the reference config).
        image_size: ``(height, width)`` (``None``: the reference config).
        amd_train_ids: Training identities the interpreters are fitted on (``None``: all of them).
        val_ids: Fresh identities of the validation split of the re-weighting (as many as the reference
            test split has: with 40, Rank-1 saturated at 99.4 % and every alpha scored the same).
        gray_seconds: Fit budget (wall-clock seconds) of the gray-box interpreter.
        black_seconds: Fit budget of the black-box interpreter.
        cross_seconds: Fit budget of the 18-attribute (shared schema) interpreter of the cross-domain run.
        fit_epochs: Epochs of every fit (``None``: the explainer's default, cut by the budgets).
        pk: Identities and images per identity of the PK training batches.
        pairs: Query x gallery pairs scored by every method.
        localization_pairs: Further pairs on which AMD's per-attribute maps are scored.
        sensitivity_persons: Test images whose one-attribute flips measure the model's sensitivity.
        common_flips: Common attributes flipped per pair (besides all exclusive ones) for the causal
            agreement.
        baseline_overrides: Per baseline, the constructor settings this size changes; every other
            setting is the baseline's registered ``defaults`` (``reidexplain.baselines.BASELINES``;
            the full size changes none). See :func:`~reidbench._methods.baseline_settings`.
        curve_steps: Steps of the deletion and insertion curves.
        patch_size: Side of the patches the deletion/insertion curves swap (8 at 128x64: a 16x8 grid).
        scale_fractions: Fractions of the gallery timed by the scale test.
        alphas: Candidate ``alpha`` of the re-weighted distance ``(1 + alpha * max_k p_k) * d``.

    Examples:
        >>> SIZES["quick"].pairs, SIZES["full"].pairs
        (8, 48)
        >>> get_size("tiny").image_size
        (64, 32)
    """

    name: str = "full"
    num_train_ids: int | None = None
    num_test_ids: int | None = None
    images_per_id: int | None = None
    image_size: tuple[int, int] | None = None
    amd_train_ids: int | None = None
    val_ids: int = 150
    gray_seconds: float = 300.0
    black_seconds: float = 180.0
    cross_seconds: float = 150.0
    fit_epochs: int | None = None
    pk: tuple[int, int] = (6, 4)
    pairs: int = 48
    localization_pairs: int = 160
    sensitivity_persons: int = 80
    common_flips: int = 3
    baseline_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    curve_steps: int = 20
    patch_size: int = 8
    scale_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    alphas: tuple[float, ...] = field(default=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0))

    def __post_init__(self) -> None:
        for key in ("val_ids", "pairs", "localization_pairs", "sensitivity_persons", "curve_steps",
                    "patch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BenchmarkSize.{key}: expected an int >= 1, got {value!r}")
        for key in ("gray_seconds", "black_seconds", "cross_seconds"):
            if not float(getattr(self, key)) > 0:
                raise ValueError(f"BenchmarkSize.{key}: expected seconds > 0, got {getattr(self, key)!r}")
        if not self.scale_fractions or not all(0 < f <= 1 for f in self.scale_fractions):
            raise ValueError(f"BenchmarkSize.scale_fractions: expected fractions in (0, 1], "
                             f"got {self.scale_fractions!r}")
        if not self.alphas or min(self.alphas) < 0:
            raise ValueError(f"BenchmarkSize.alphas: expected non-negative values, got {self.alphas!r}")
        # A private copy of plain dicts: the caller's mapping can change later, this size does not.
        object.__setattr__(self, "baseline_overrides",
                           {str(k): dict(v) if isinstance(v, Mapping) else v
                            for k, v in dict(self.baseline_overrides).items()})
        for name, settings in self.baseline_overrides.items():
            if name not in BASELINES:
                raise ValueError(f"BenchmarkSize.baseline_overrides: unknown baseline {name!r}; "
                                 f"registered: {BASELINES.names()}")
            if not isinstance(settings, Mapping):
                raise ValueError(f"BenchmarkSize.baseline_overrides[{name!r}]: expected a mapping of "
                                 f"keyword arguments, got {settings!r}")

    def data_overrides(self) -> dict[str, Any]:
        """The entries of ``reference_splits`` this size changes (``None`` fields are left out)."""
        keys = ("num_train_ids", "num_test_ids", "images_per_id", "image_size")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)


SIZES: dict[str, BenchmarkSize] = {
    # About 16 minutes on 2 CPU cores: 10.5 of them fitting the three interpreters.
    "full": BenchmarkSize(),
    # About 3 minutes: a third of the test identities, a few pairs, short fits.
    "quick": BenchmarkSize(
        name="quick", num_test_ids=50, amd_train_ids=150, val_ids=30, gray_seconds=40.0,
        black_seconds=20.0, cross_seconds=15.0, pairs=8, localization_pairs=32, sensitivity_persons=16,
    ),
    # Seconds, for the tests: tiny images, a handful of identities, one epoch per fit.
    "tiny": BenchmarkSize(
        name="tiny", num_train_ids=14, num_test_ids=6, images_per_id=4, image_size=(64, 32),
        val_ids=4, gray_seconds=60.0, black_seconds=60.0, cross_seconds=60.0, fit_epochs=1, pk=(4, 4),
        pairs=3, localization_pairs=4, sensitivity_persons=3, common_flips=2, curve_steps=4, patch_size=4,
        scale_fractions=(0.5, 1.0), alphas=(0.0, 0.5),
        baseline_overrides={"integrated_gradients": {"n_steps": 4}, "occlusion": {"window": 8, "stride": 8}},
    ),
}
"""The preset sizes: ``"full"``, ``"quick"`` (the CLI's ``--quick``) and ``"tiny"`` (tests)."""


def get_size(size: str | BenchmarkSize) -> BenchmarkSize:
    """Resolve a preset name or pass a :class:`BenchmarkSize` through.

    Args:
        size: ``"full"``, ``"quick"``, ``"tiny"`` or a :class:`BenchmarkSize`.

    Returns:
        The size.

    Raises:
        ValueError: an unknown preset name.
        TypeError: neither a string nor a :class:`BenchmarkSize`.

    Examples:
        >>> get_size("quick").name
        'quick'
    """
    if isinstance(size, BenchmarkSize):
        return size
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"size: expected one of {sorted(SIZES)} or a BenchmarkSize, got {size!r}")
        return SIZES[size]
    raise TypeError(f"size: expected a preset name or a BenchmarkSize, got {type(size).__name__}")
