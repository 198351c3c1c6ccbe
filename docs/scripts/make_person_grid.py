"""Make ``docs/assets/persons_grid.png``: synthetic persons with their labels, and a counterfactual pair.

Rows 1-2 show Market-style persons, rows 3-4 Duke-style persons, each titled with its positive
attributes (the schema's readable labels). The last row shows two counterfactual renders: the
original, the same photo with one attribute flipped, the pixels that changed, and the attribute's mask
(union of both renders) in which every changed pixel must lie.

Run from the repository root (a few seconds)::

    .venv/bin/python docs/scripts/make_person_grid.py
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from reidexplain.data import SyntheticPersons  # noqa: E402

COLUMNS = 8


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def _title(data: SyntheticPersons, labels: torch.Tensor, view: str) -> str:
    names = [data.schema.labels[k] for k in range(len(data.schema)) if labels[k] > 0]
    # Labels that are true for most persons say little; keep the title short.
    common = {"short sleeves", "pants (not dress/skirt)"}
    names = [n for n in names if n not in common]
    return f"[{view}]\n" + "\n".join(names)


def _person_rows(axes: np.ndarray, data: SyntheticPersons, first: int) -> None:
    for col, ax in enumerate(axes):
        i = first + col * data.images_per_id
        item = data[i]
        ax.imshow(_hwc(item["image"]), interpolation="nearest")
        ax.set_title(_title(data, item["attributes"], data.nuisance(i).view), fontsize=6.5,
                     loc="left", va="top", y=-0.02, pad=-2)
        ax.axis("off")


def _counterfactual(axes: np.ndarray, data: SyntheticPersons, i: int, attribute: str, view: str) -> None:
    nuisance = dataclasses.replace(data.nuisance(i), view=view, occluder=None)
    identity = data.identity(i)
    k = data.schema.index(attribute)
    original = data.render(identity, nuisance)
    flipped = data.render(identity, nuisance, flip=attribute)
    changed = (original["image"] != flipped["image"]).any(0)
    mask = original["masks"][k] | flipped["masks"][k]
    outside = int((changed & ~mask).sum())
    was = "with" if original["attributes"][k] > 0 else "without"
    now = "without" if was == "with" else "with"
    panels = [
        (_hwc(original["image"]), f"original\n({was} {data.schema.label(attribute)})"),
        (_hwc(flipped["image"]), f"flip '{attribute}'\n({now})"),
        (changed.numpy(), f"changed pixels\n({int(changed.sum())})"),
        (_hwc(original["image"]) * 0.35 + mask.numpy()[..., None] * np.array([0.65, 0.55, 0.0]),
         f"mask of '{attribute}'\n(changed outside: {outside})"),
    ]
    for ax, (image, title) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/assets/persons_grid.png"))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    market = SyntheticPersons(2 * COLUMNS, 2, domain="market", seed=args.seed)
    duke = SyntheticPersons(2 * COLUMNS, 2, domain="duke", seed=args.seed)
    fig = plt.figure(figsize=(COLUMNS * 1.55, 5 * 4.1))
    grid = fig.add_gridspec(5, COLUMNS, hspace=0.55, wspace=0.08)
    rows = [np.array([fig.add_subplot(grid[r, c]) for c in range(COLUMNS)]) for r in range(5)]
    _person_rows(rows[0], market, 0)
    _person_rows(rows[1], market, COLUMNS * 2 + 1)
    _person_rows(rows[2], duke, 0)
    _person_rows(rows[3], duke, COLUMNS * 2 + 1)
    for row, name in zip(rows[:4], ("Market-style", "Market-style", "Duke-style", "Duke-style"),
                         strict=True):
        row[0].text(-0.12, 0.5, name, rotation=90, transform=row[0].transAxes, va="center",
                    ha="right", fontsize=9)
    # A short-haired person, so that the pack is not hidden behind long hair.
    short_hair = next(i for i in range(len(market)) if not market.identity(i).long_hair)
    _counterfactual(rows[4][:4], market, short_hair, "backpack", "back")
    _counterfactual(rows[4][4:], duke, 6, "upred" if duke.identity(6).upper_color != "red" else "upblue",
                    "front")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
