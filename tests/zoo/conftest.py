"""A tiny learnable ReID toy dataset shared by the zoo tests."""

from __future__ import annotations

import pytest
import torch


class ToyReID(torch.utils.data.Dataset):
    """``num_ids`` identities, each an upper and a lower colour block plus noise, on two cameras.

    Images are ``(3, 32, 16)``; the identity is recoverable from the two colours, so a few epochs of
    training must beat the untrained model.
    """

    def __init__(self, num_ids: int = 8, per_id: int = 4, seed: int = 0, pid_offset: int = 100) -> None:
        g = torch.Generator().manual_seed(seed)
        colours = torch.rand(num_ids, 2, 3, generator=g)
        images, self.pids, self.camids = [], [], []
        for identity in range(num_ids):
            for j in range(per_id):
                img = torch.empty(3, 32, 16)
                img[:, :16] = colours[identity, 0, :, None, None]
                img[:, 16:] = colours[identity, 1, :, None, None]
                img = (img + 0.15 * torch.randn(3, 32, 16, generator=g)).clamp(0, 1)
                images.append(img)
                # Sparse, non-contiguous pids check the trainer's relabelling.
                self.pids.append(pid_offset + 7 * identity)
                self.camids.append(j % 2)
        self.images = torch.stack(images)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        return {
            "image": self.images[i],
            "pid": self.pids[i],
            "camid": self.camids[i],
            "attributes": torch.zeros(2),
            "masks": torch.zeros(2, 32, 16, dtype=torch.bool),
        }


@pytest.fixture
def toy_reid():
    return ToyReID()


