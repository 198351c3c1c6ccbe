"""Synthetic pedestrians with pixel-exact ground truth: :class:`SyntheticPersons`, :func:`synthetic_splits`.

Procedurally drawn people (128x64 by default) for two domains: ``"market"`` labelled with
:data:`~reidexplain.attributes.MARKET1501` (26 attributes, 6 cameras) and ``"duke"`` with
:data:`~reidexplain.attributes.DUKEMTMC` (23 attributes, 8 cameras, winter clothes, other backgrounds,
dimmer and cooler light, more occlusion). Because the library draws them, it knows for every image
where each attribute is (``masks``) and can re-draw the same photo with one attribute changed
(:meth:`SyntheticPersons.render` with ``flip``).

**Identities.** One :class:`Identity` per person id: exactly one upper and one lower garment colour
(drawn from the colour group's positive ratios renormalised to sum to one), the binary attributes at the
schema's positive ratios (long hair, skirts, handbags and boots correlated with gender, marginals kept),
and cues that are not attributes: height, build, skin tone, hair colour, shoe shade (and colour in
Market), garment tint, a pattern (plain, stripes, chest logo), object colours and carry side.

**Nuisance.** One :class:`Nuisance` per image: the camera (background texture and light of that
camera), view (front, back, side), walking pose, mirror, scale and shift jitter, light gain, colour
cast, vertical light gradient and saturation, an occluder box of background clutter (20 % of Market
images, 30 % of Duke images), Gaussian pixel noise.

**Masks.** ``masks[k]`` marks the pixels where attribute ``k`` is decided in that image, for both of
its values, as follows (shapes hidden behind later parts of the same person are excluded; the occluder
box is ignored, its box is in :attr:`Nuisance.occluder`):

| attribute | mask |
|---|---|
| upper colours (``upX``) | the upper garment: torso, stripes, sleeves, long-top extension; the same mask for every colour of the group |
| lower colours (``downX``) | the lower garment: trousers or skirt and hips; the same for the whole group |
| ``up`` (short sleeves) | the forearms, where a long sleeve is or would be |
| ``down`` (short lower) | the shins (long trousers) or the lower part of a long skirt |
| ``clothes`` (pants) | trousers and hips plus where a skirt would be, or the skirt plus where trousers would be |
| ``gender`` (female) | the body-shape cue: torso, hips, skirt and coat outline; in front and back view also arms, hands and a handbag (placed by the shoulder width) |
| ``hair`` (long hair) | long hair over the shoulders (front), down the back (back), behind the head (side) |
| ``hat`` | the cap and brim at the top of the head |
| ``backpack`` | back view: the pack; front view: the two straps; side view: the pack behind the back and one strap |
| ``bag`` (shoulder bag) | the strap across the chest and the bag at the hip |
| ``handbag`` | the bag hanging below one hand |
| ``boots`` | the boot shafts over the ankles and shins |
| ``shoes`` (light shoes) | the shoes |
| ``top`` (long top) | the coat below the waist, over the hips and thighs |

For an absent attribute the mask is where it would be drawn (the hat region for no hat, etc.).

**Counterfactuals.** ``render(identity, nuisance, flip=name)`` re-draws the same person, pose, camera,
light and noise with that attribute toggled; pixels change only inside the union of that attribute's
masks in the two renders. For a one-hot colour group, switching a colour on recolours the garment;
switching the current colour off picks the group's most frequent other colour (by the schema's ratios).
A list of flips is applied in order.

Examples:
    >>> from reidexplain.data import SyntheticPersons
    >>> data = SyntheticPersons(num_identities=4, images_per_id=2, seed=0)
    >>> item = data[0]
    >>> item["image"].shape, item["masks"].shape, len(data.schema)
    (torch.Size([3, 128, 64]), torch.Size([26, 128, 64]), 26)
    >>> same = data.render(data.identity(0), data.nuisance(0))
    >>> bool((same["image"] == item["image"]).all())
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from reidexplain.data._canvas import Canvas, flush_all
from reidexplain.data._domains import (
    CameraLook,
    camera_look,
    get_domain,
    rng_for,
    sample_identity,
    sample_nuisance,
)
from reidexplain.data._helpers import check_int, check_size, query_images
from reidexplain.data._identity import (
    Identity,
    Nuisance,
    color_groups,
    color_name,
    flip_identity,
    labels_of,
    resolve_flips,
)
from reidexplain.data._render import MaskTags, PersonPainter
from reidexplain.data._scene import apply_camera, background_bank, paint_background, paint_occluder

__all__ = ["SyntheticPersons", "synthetic_splits", "Identity", "Nuisance"]


class SyntheticPersons(Dataset):
    """Procedurally rendered pedestrians with attribute labels, masks and counterfactuals.

    Item ``i`` shows identity ``i // images_per_id`` (pid ``id_offset + i // images_per_id``) in its
    image ``i % images_per_id``. Every draw comes from a generator seeded by (seed, domain, pid, image),
    so an item is the same whatever the access order. Each identity is seen by 2 to 6 of the allowed
    cameras (cycling over its images).

    Args:
        num_identities: Number of persons.
        images_per_id: Images per person.
        domain: ``"market"`` (Market-1501 schema, 6 cameras) or ``"duke"`` (DukeMTMC schema, 8 cameras).
        seed: Non-negative seed of every draw.
        image_size: ``(height, width)``, at least ``(32, 16)``.
        cameras: Camera ids (0-based) persons may be seen by; default all of the domain's cameras.
        id_offset: First pid; datasets with disjoint pid ranges have disjoint persons.
        nuisance_strength: Scales pose, framing, light jitter and noise; ``0`` gives frontal, centred,
            unoccluded, noise-free persons (the camera background and light stay).
        occlusion_prob: Probability of an occluder per image; default the domain's (0.2 / 0.3).
        with_masks: Return ``masks`` in items (skip them for faster training).

    Raises:
        ValueError, TypeError: Invalid arguments (the message names the argument).

    Examples:
        >>> data = SyntheticPersons(3, 2, domain="duke", seed=1, image_size=(64, 32))
        >>> len(data), data.pids, data.attributes.shape
        (6, [0, 0, 1, 1, 2, 2], torch.Size([6, 23]))
        >>> flipped = data.render(data.identity(0), data.nuisance(0), flip="hat")
        >>> k = data.schema.index("hat")
        >>> float(flipped["attributes"][k]) != float(data.attributes[0, k])
        True
    """

    BATCH = 4  # persons drawn together by __getitems__ (measured: 4 to 8 are fastest)

    def __init__(self, num_identities: int, images_per_id: int, domain: str = "market", seed: int = 0,
                 image_size: tuple[int, int] = (128, 64), cameras: Sequence[int] | None = None,
                 id_offset: int = 0, *, nuisance_strength: float = 1.0,
                 occlusion_prob: float | None = None, with_masks: bool = True) -> None:
        self.num_identities = check_int(num_identities, "num_identities", 1)
        self.images_per_id = check_int(images_per_id, "images_per_id", 1)
        self.seed = check_int(seed, "seed", 0)
        self.id_offset = check_int(id_offset, "id_offset", 0)
        self._spec = get_domain(domain)
        self.domain = self._spec.name
        self.schema = self._spec.schema
        self.image_size = check_size(image_size)
        n_cam = self._spec.num_cameras
        if cameras is None:
            cameras = range(n_cam)
        cams = sorted({int(c) for c in cameras})
        if not cams or cams[0] < 0 or cams[-1] >= n_cam:
            raise ValueError(f"`cameras`: expected ids in [0, {n_cam}) for domain {self.domain!r}, "
                             f"got {list(cameras)}")
        self.cameras = tuple(cams)
        if not 0.0 <= float(nuisance_strength) <= 2.0:
            raise ValueError(f"`nuisance_strength`: expected a value in [0, 2], got {nuisance_strength}")
        self.nuisance_strength = float(nuisance_strength)
        occ = self._spec.occlusion_prob if occlusion_prob is None else float(occlusion_prob)
        if not 0.0 <= occ <= 1.0:
            raise ValueError(f"`occlusion_prob`: expected a probability in [0, 1], got {occlusion_prob}")
        self.occlusion_prob = occ
        self.with_masks = bool(with_masks)
        self._tags = MaskTags(self.schema)
        self._looks: dict[int, CameraLook] = {}
        self._identities: dict[int, Identity] = {}
        self._labels: dict[int, np.ndarray] = {}
        self._plans = [self._camera_plan(self.id_offset + k) for k in range(self.num_identities)]
        self._item_id = np.repeat(np.arange(self.num_identities), self.images_per_id)
        self._item_img = np.tile(np.arange(self.images_per_id), self.num_identities)
        self._index_items()

    # ------------------------------------------------------------------ bookkeeping
    def _camera_plan(self, pid: int) -> tuple[int, ...]:
        rng = rng_for(self.seed, self._spec, pid, 2)
        n = len(self.cameras)
        hi = min(n, self.images_per_id, 6)
        k = int(rng.integers(min(2, hi), hi + 1))
        return tuple(int(self.cameras[c]) for c in rng.choice(n, size=k, replace=False))

    def _index_items(self) -> None:
        self.pids: list[int] = [self.id_offset + int(k) for k in self._item_id]
        self.camids: list[int] = [self._plans[k][j % len(self._plans[k])]
                                  for k, j in zip(self._item_id, self._item_img, strict=True)]
        self._attributes: torch.Tensor | None = None

    def _subset(self, indices: Sequence[int]) -> SyntheticPersons:
        out = copy.copy(self)
        idx = np.asarray(indices, dtype=np.int64)
        out._item_id, out._item_img = self._item_id[idx], self._item_img[idx]
        out._index_items()
        return out

    def _check_index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} items")
        return int(i) % n

    def __len__(self) -> int:
        return len(self._item_id)

    @property
    def attributes(self) -> torch.Tensor:
        """``(N, M)`` float 0/1 labels of every item in schema order, computed without rendering.

        Examples:
            >>> SyntheticPersons(3, 2).attributes.shape
            torch.Size([6, 26])
        """
        if self._attributes is None:
            rows = [labels_of(self._identity_of(int(k)), self.schema) for k in self._item_id]
            empty = np.zeros((0, len(self.schema)), np.float32)
            self._attributes = torch.from_numpy(np.stack(rows) if rows else empty)
        return self._attributes

    # ------------------------------------------------------------------ draws
    def _identity_of(self, k: int) -> Identity:
        if k not in self._identities:
            pid = self.id_offset + k
            self._identities[k] = sample_identity(self._spec, rng_for(self.seed, self._spec, pid, 0), pid)
        return self._identities[k]

    def _look(self, camid: int) -> CameraLook:
        if camid not in self._looks:
            self._looks[camid] = camera_look(self._spec, camid)
        return self._looks[camid]

    def identity(self, i: int) -> Identity:
        """The :class:`Identity` (person draws) behind item ``i``.

        Args:
            i: Item index (negative counts from the end).

        Returns:
            The identity, shared by all items of the same pid.

        Raises:
            IndexError: ``i`` out of range.

        Examples:
            >>> data = SyntheticPersons(2, 3)
            >>> data.identity(0) == data.identity(2), data.identity(3).pid
            (True, 1)
        """
        return self._identity_of(int(self._item_id[self._check_index(i)]))

    def nuisance(self, i: int) -> Nuisance:
        """The :class:`Nuisance` (photo draws) behind item ``i``.

        Args:
            i: Item index (negative counts from the end).

        Returns:
            The nuisance; ``render(identity(i), nuisance(i))`` reproduces item ``i`` exactly.

        Raises:
            IndexError: ``i`` out of range.

        Examples:
            >>> data = SyntheticPersons(2, 3)
            >>> data.nuisance(4).camid == data.camids[4]
            True
        """
        i = self._check_index(i)
        pid, img, camid = self.pids[i], int(self._item_img[i]), self.camids[i]
        rng = rng_for(self.seed, self._spec, pid, 1, img)
        return sample_nuisance(self._spec, self._look(camid), camid, rng, self.nuisance_strength,
                               self.occlusion_prob)

    def flipped(self, identity: Identity, flip: str | int | Sequence[str | int] | None) -> Identity:
        """``identity`` with the schema attributes ``flip`` toggled (colour rule: see the module doc).

        Args:
            identity: The person to edit.
            flip: An attribute name or index, a list of them (applied in order), or ``None``.

        Returns:
            A new :class:`Identity`.

        Raises:
            TypeError: ``identity`` is not an :class:`Identity`.
            ValueError: An attribute the schema does not have.

        Examples:
            >>> data = SyntheticPersons(1, 1)
            >>> data.flipped(data.identity(0), "hat").hat != data.identity(0).hat
            True
        """
        if not isinstance(identity, Identity):
            raise TypeError(f"`identity`: expected an Identity, got {type(identity).__name__}")
        for group, members in color_groups(self.schema).items():
            colors = {color_name(n) for n in members}
            if getattr(identity, group) not in colors:
                raise ValueError(f"`identity.{group}`: expected one of {sorted(colors)} (schema "
                                 f"{self.schema.name!r}), got {getattr(identity, group)!r}")
        return flip_identity(identity, self.schema, resolve_flips(flip, self.schema))

    # ------------------------------------------------------------------ rendering
    def render(self, identity: Identity, nuisance: Nuisance,
               flip: str | int | Sequence[str | int] | None = None) -> dict[str, Any]:
        """Draw ``identity`` as seen through ``nuisance``, optionally with attributes ``flip`` toggled.

        Args:
            identity: Who (from :meth:`identity`, or edited with ``dataclasses.replace``).
            nuisance: The photo (from :meth:`nuisance`); its ``camid`` must be a camera of the domain.
            flip: An attribute name or index, or a list of them, to toggle before drawing.

        Returns:
            The item dict ``{"image", "pid", "camid", "attributes", "masks"}`` (``masks`` only with
            ``with_masks=True``); ``attributes`` are the labels after the flip.

        Raises:
            TypeError: ``identity`` or ``nuisance`` of the wrong type.
            ValueError: Unknown attribute in ``flip``, or a camera the domain does not have.

        Examples:
            >>> data = SyntheticPersons(2, 1, image_size=(64, 32))
            >>> a = data.render(data.identity(0), data.nuisance(0))
            >>> b = data.render(data.identity(0), data.nuisance(0), flip="backpack")
            >>> k = data.schema.index("backpack")
            >>> changed = (a["image"] != b["image"]).any(0)
            >>> bool((changed & ~(a["masks"][k] | b["masks"][k])).any())
            False
        """
        if not isinstance(nuisance, Nuisance):
            raise TypeError(f"`nuisance`: expected a Nuisance, got {type(nuisance).__name__}")
        if not 0 <= nuisance.camid < self._spec.num_cameras:
            raise ValueError(f"`nuisance.camid`: expected a camera in [0, {self._spec.num_cameras}) of "
                             f"domain {self.domain!r}, got {nuisance.camid}")
        person = self.flipped(identity, flip)
        return self._draw(person, nuisance, labels_of(person, self.schema))

    def _draw(self, person: Identity, nuisance: Nuisance, labels: np.ndarray) -> dict[str, Any]:
        job = self._record(person, nuisance, labels)
        job[0].flush()
        return self._finish(*job)

    def _record(self, person: Identity, nuisance: Nuisance,
                labels: np.ndarray) -> tuple[Canvas, np.ndarray, Identity, Nuisance, np.ndarray]:
        """Background painted and person recorded (not yet drawn: see ``Canvas.flush``)."""
        h, w = self.image_size
        canvas = Canvas(h, w, len(self.schema), with_masks=self.with_masks)
        bank = background_bank(self._spec, nuisance.camid, h, w)
        paint_background(canvas.image, bank, nuisance.bg_offset)
        PersonPainter(canvas, person, nuisance, self._tags, self._spec.saturation).draw(flush=False)
        return canvas, bank, person, nuisance, labels

    def _finish(self, canvas: Canvas, bank: np.ndarray, person: Identity, nuisance: Nuisance,
                labels: np.ndarray) -> dict[str, Any]:
        """Occluder, camera and the item dict of a flushed canvas."""
        paint_occluder(canvas.image, bank, nuisance)
        item: dict[str, Any] = {
            "image": torch.from_numpy(apply_camera(canvas.image, nuisance)),
            "pid": int(person.pid),
            "camid": int(nuisance.camid),
            "attributes": torch.from_numpy(labels),
        }
        if canvas.has_masks:
            item["masks"] = torch.from_numpy(canvas.masks())
        return item

    def counterfactual(self, i: int, flip: str | int | Sequence[str | int]) -> dict[str, Any]:
        """Item ``i`` re-drawn with ``flip`` toggled (same pose, camera, light and noise).

        Examples:
            >>> data = SyntheticPersons(1, 1, image_size=(64, 32))
            >>> data.counterfactual(0, "hat")["image"].shape
            torch.Size([3, 64, 32])
        """
        return self.render(self.identity(i), self.nuisance(i), flip=flip)

    def _own_draws(self, i: int) -> tuple[Identity, Nuisance, np.ndarray]:
        """Identity, nuisance and a copy of the labels of item ``i`` (the dataset's draws need no checks)."""
        i = self._check_index(i)
        k = int(self._item_id[i])
        labels = self._labels.get(k)
        if labels is None:
            labels = self._labels[k] = labels_of(self._identity_of(k), self.schema)
        return self._identity_of(k), self.nuisance(i), labels.copy()  # the item owns its labels

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Render item ``i``: ``{"image", "pid", "camid", "attributes", "masks"}``."""
        return self._draw(*self._own_draws(i))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Render several items: the same as ``[self[i] for i in indices]``, with the shapes of every
        group of :attr:`BATCH` persons evaluated together (fewer numpy calls per person).

        ``torch.utils.data.DataLoader`` calls it with the indices of a batch.

        Examples:
            >>> data = SyntheticPersons(2, 2, image_size=(64, 32))
            >>> items = data.__getitems__([3, 0])
            >>> bool((items[0]["image"] == data[3]["image"]).all()), len(items)
            (True, 2)
        """
        items = []
        for start in range(0, len(indices), self.BATCH):
            jobs = [self._record(*self._own_draws(i)) for i in indices[start:start + self.BATCH]]
            flush_all([job[0] for job in jobs])
            items += [self._finish(*job) for job in jobs]
        return items

    def __repr__(self) -> str:
        return (f"SyntheticPersons(domain={self.domain!r}, items={len(self)}, "
                f"identities={len(set(self.pids))}, image_size={self.image_size}, seed={self.seed})")


def synthetic_splits(num_train_ids: int, num_test_ids: int, images_per_id: int, domain: str = "market",
                     seed: int = 0, image_size: tuple[int, int] = (128, 64),
                     **kwargs: Any) -> dict[str, SyntheticPersons]:
    """Train, query and gallery sets with disjoint train/test persons, Market-1501 style.

    Train persons have pids ``0 .. num_train_ids - 1``, test persons the next ``num_test_ids``. For each
    test person, one image per camera is a query and the rest is gallery, chosen so that every query
    has a gallery image of the same person from another camera.

    Args:
        num_train_ids: Persons in ``train``.
        num_test_ids: Persons split into ``query`` and ``gallery``.
        images_per_id: Images per person, at least 2.
        domain: ``"market"`` or ``"duke"``.
        seed: Seed of every draw.
        image_size: ``(height, width)``.
        **kwargs: Further :class:`SyntheticPersons` options (``nuisance_strength``, ``with_masks``...).

    Returns:
        ``{"train": ..., "query": ..., "gallery": ...}``.

    Raises:
        ValueError: ``images_per_id < 2`` (a query needs a gallery match) or other invalid arguments.

    Examples:
        >>> splits = synthetic_splits(4, 3, 4, image_size=(64, 32))
        >>> sorted(set(splits["query"].pids)) == sorted(set(splits["gallery"].pids))
        True
        >>> set(splits["train"].pids).isdisjoint(splits["gallery"].pids)
        True
    """
    check_int(num_train_ids, "num_train_ids", 1)
    check_int(num_test_ids, "num_test_ids", 1)
    if check_int(images_per_id, "images_per_id", 1) < 2:
        raise ValueError(f"`images_per_id`: expected >= 2 so that every query has a gallery match, "
                         f"got {images_per_id}")
    train = SyntheticPersons(num_train_ids, images_per_id, domain, seed, image_size, **kwargs)
    test = SyntheticPersons(num_test_ids, images_per_id, domain, seed, image_size,
                            id_offset=num_train_ids, **kwargs)
    if len(test.cameras) < 2:
        raise ValueError(f"`cameras`: queries and gallery need at least 2 cameras, got {test.cameras}")
    query, gallery = [], []
    for k in range(num_test_ids):
        start = k * images_per_id
        cams = test.camids[start:start + images_per_id]
        picked = set(query_images(cams))
        for j in range(images_per_id):
            (query if j in picked else gallery).append(start + j)
    return {"train": train, "query": test._subset(query), "gallery": test._subset(gallery)}
