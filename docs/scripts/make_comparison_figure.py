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
from reidexplain.visualization import compare
from reidexplain.zoo import create_model, train_reid_model

HEIGHT, WIDTH = 128, 64
BASELINES = {
    "integrated_gradients": {"n_steps": 32, "internal_batch_size": 32},
    "saliency": {},
    "occlusion": {"window": (3, 16, 16), "stride": (3, 8, 8), "perturbations_per_eval": 16},
    "grad_cam": {"layer": "auto"},
    "feature_ablation": {"cell": 16, "perturbations_per_eval": 16},
}
_COLOURS = torch.tensor([[0.85, 0.1, 0.1], [0.1, 0.3, 0.85], [0.1, 0.1, 0.1], [0.95, 0.95, 0.95],
                         [0.15, 0.6, 0.2], [0.6, 0.6, 0.6]])


class ToyPersons(torch.utils.data.Dataset):
    """Fallback persons: upper and lower garment colours and a backpack make the identity."""

    def __init__(self, n_ids: int = 24, per_id: int = 6, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for pid in range(n_ids):
            up, down = torch.randint(0, len(_COLOURS), (2,), generator=gen).tolist()
            bag = bool(torch.rand(1, generator=gen) < 0.5)
            for _ in range(per_id):
                self.items.append((self._render(up, down, bag, gen), pid))
        self.pids = [pid for _, pid in self.items]

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
        image, pid = self.items[i]
        return {"image": image, "pid": pid, "camid": i % 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/assets/comparison.png")
    parser.add_argument("--train-seconds", type=float, default=20.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.perf_counter()

    data = ToyPersons()
    print("data: fallback toy persons (reidexplain.data.synthetic_splits not available)")
    model = create_model("reidnet_small")
    epochs = 1
    while True:
        t0 = time.perf_counter()
        model = train_reid_model(model, data, epochs=epochs, p=8, k=4, progress=False)
        if time.perf_counter() - t0 > args.train_seconds / 4 or epochs >= 8:
            break
        epochs *= 2
    model.eval()

    a, b = data[0]["image"], data[6 * 5]["image"]
    results = {}
    for name, kwargs in BASELINES.items():
        t0 = time.perf_counter()
        results[name] = create_baseline(name, model, **kwargs).explain((a, b))
        print(f"{name}: {time.perf_counter() - t0:.2f} s")
    from reidexplain.visualization import method_label

    fig, _ = compare({method_label(k): v for k, v in results.items()}, title="Why are these two persons far apart?")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
