"""Make ``docs/assets/comparison.png``: AMD next to the Captum baselines on one pair of persons.

Everything comes from the project's own code: synthetic persons (``reidexplain.data``), a small ReID
model trained for a few seconds (``reidexplain.zoo``), an AMD interpreter fitted for a few seconds
(``reidexplain.Explainer``), the baselines (``reidexplain.baselines``) and the figure
(``reidexplain.visualization.compare``). When a part has not landed yet, the script says so and
falls back (toy persons drawn here; no AMD row).

Run from the repository root (about a minute on 2 CPU cores)::

    .venv/bin/python docs/scripts/make_comparison_figure.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from reidexplain.baselines import create_baseline
from reidexplain.visualization import compare, method_label
from reidexplain.zoo import create_model, train_reid_model

HEIGHT, WIDTH = 128, 64
BASELINES = {
    "integrated_gradients": {"n_steps": 32, "internal_batch_size": 32},
    "saliency": {},
    "occlusion": {"window": (3, 16, 16), "stride": (3, 8, 8), "perturbations_per_eval": 16},
    "grad_cam": {"layer": "auto"},
    "feature_ablation": {"cell": 16, "perturbations_per_eval": 16},
}
_COLOUR_NAMES = ("red", "blue", "black", "white", "green", "gray")
_COLOURS = torch.tensor([[0.85, 0.1, 0.1], [0.1, 0.3, 0.85], [0.1, 0.1, 0.1], [0.95, 0.95, 0.95],
                         [0.15, 0.6, 0.2], [0.6, 0.6, 0.6]])
TOY_ATTRIBUTES = (*(f"up{c}" for c in _COLOUR_NAMES), *(f"down{c}" for c in _COLOUR_NAMES), "backpack")


class ToyPersons(torch.utils.data.Dataset):
    """Fallback persons: upper and lower garment colours and a backpack make the identity."""

    def __init__(self, n_ids: int = 24, per_id: int = 6, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for pid in range(n_ids):
            up, down = torch.randint(0, len(_COLOURS), (2,), generator=gen).tolist()
            bag = bool(torch.rand(1, generator=gen) < 0.5)
            labels = torch.zeros(len(TOY_ATTRIBUTES))
            labels[up] = labels[len(_COLOURS) + down] = 1.0
            labels[-1] = float(bag)
            for _ in range(per_id):
                self.items.append((self._render(up, down, bag, gen), pid, labels))
        self.pids = [item[1] for item in self.items]

    @staticmethod
    def _render(up: int, down: int, bag: bool, gen: torch.Generator) -> torch.Tensor:
        img = 0.35 + 0.3 * torch.rand(3, 1, 1, generator=gen) + 0.08 * torch.randn(3, HEIGHT, WIDTH, generator=gen)
        dx = int(torch.randint(-6, 7, (1,), generator=gen))
        light = 0.8 + 0.4 * float(torch.rand(1, generator=gen))
        cx = WIDTH // 2 + dx
        img[:, 8:26, cx - 8 : cx + 8] = torch.tensor([0.9, 0.7, 0.55])[:, None, None]  # head
        img[:, 26:70, cx - 16 : cx + 16] = _COLOURS[up][:, None, None] * light  # upper body
        img[:, 70:122, cx - 14 : cx + 14] = _COLOURS[down][:, None, None] * light  # legs
        img[:, 76:122, cx - 2 : cx + 2] *= 0.7  # gap between the legs
        if bag:
            img[:, 30:64, cx + 14 : cx + 22] = torch.tensor([0.45, 0.3, 0.15])[:, None, None]
        return img.clamp(0, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image, pid, labels = self.items[i]
        return {"image": image, "pid": pid, "camid": i % 2, "attributes": labels}


def load_data(seed: int = 0):
    """Training persons and their attribute names: the project's synthetic data, else toy persons."""
    return ToyPersons(seed=seed), TOY_ATTRIBUTES, "fallback toy persons drawn by this script"


def pick_pair(data, names) -> tuple[int, int]:
    """Two persons of different identities whose attributes differ in few, visible ways."""
    labels = torch.stack([data[i]["attributes"] for i in range(len(data))])
    pids = torch.tensor(data.pids)
    best = None
    for i in range(0, len(data), 7):
        for j in range(len(data)):
            differ = int((labels[i] != labels[j]).sum())
            if pids[i] != pids[j] and differ >= 2 and (best is None or differ < best[0]):
                best = (differ, i, j)
    _, i, j = best
    exclusive = [n for n, x, y in zip(names, labels[i], labels[j], strict=True) if x != y]
    print(f"pair: items {i} and {j}, exclusive attributes {exclusive}")
    return i, j


def fit_amd(model, data, names, epochs: int):
    """An AMD explainer fitted for ``epochs``; ``None`` when the Explainer is not available."""
    try:
        from reidexplain.data.sampler import PKSampler
        from reidexplain.explainer import Explainer
    except ImportError as err:  # the explainer has not landed in this checkout
        print(f"AMD: not available ({err}); the figure shows the baselines only")
        return None
    loader = torch.utils.data.DataLoader(data, batch_sampler=PKSampler(data.pids, p=6, k=4, seed=0))
    explainer = Explainer(model, attributes=list(names))
    t0 = time.perf_counter()
    explainer.fit(loader, epochs=epochs, progress=False)
    last = explainer.history[-1] if explainer.history else {}
    print(f"AMD: fitted {epochs} epochs in {time.perf_counter() - t0:.0f} s, last epoch {last}")
    return explainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/assets/comparison.png")
    # Fixed epochs rather than time budgets, so that the figure is the same on every machine.
    parser.add_argument("--reid-epochs", type=int, default=8, help="ReID model training epochs")
    parser.add_argument("--amd-epochs", type=int, default=20, help="AMD interpreter fitting epochs")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.perf_counter()

    data, names, source = load_data()
    print(f"data: {source}, {len(data)} images, {len(names)} attributes")
    model = create_model("reidnet_small")
    t0 = time.perf_counter()
    model = train_reid_model(model, data, epochs=args.reid_epochs, p=8, k=4, progress=False).eval()
    print(f"model: reidnet_small trained {args.reid_epochs} epochs in {time.perf_counter() - t0:.0f} s")

    i, j = pick_pair(data, names)
    pair = (data[i]["image"], data[j]["image"])
    results = {}
    explainer = fit_amd(model, data, names, args.amd_epochs)
    if explainer is not None:
        results["AMD"] = explainer.explain(pair)
    for name, kwargs in BASELINES.items():
        t0 = time.perf_counter()
        results[method_label(name)] = create_baseline(name, model, **kwargs).explain(pair)
        print(f"{name}: {time.perf_counter() - t0:.2f} s")

    fig, _ = compare(results, top_k=3, title="Why are these two persons far apart?")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
