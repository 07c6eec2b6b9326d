"""A tiny, deterministic defect data set for end-to-end model tests.

Normal images are smooth random textures (3, 64, 64) in [0.3, 0.7]; anomalous ones carry a
16 x 16 square at 1.0 or 0.0, which is also their mask. Items are dicts with ``image``,
``label``, ``mask`` and ``index``, as the models' Lightning steps expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SIZE = 64
BLOB = 16


class SyntheticDefects(Dataset):
    """Smooth textures; those labelled 1 carry a bright or dark square (their mask)."""

    def __init__(self, labels: list[int], seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(len(labels), 3, 8, 8, generator=generator)
        smooth = F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
        self.images = 0.3 + 0.4 * smooth
        self.masks = torch.zeros(len(labels), 1, SIZE, SIZE)
        self.labels = torch.tensor(labels)
        for index, label in enumerate(labels):
            if label:
                row, col = torch.randint(4, SIZE - BLOB - 4, (2,), generator=generator).tolist()
                self.images[index, :, row : row + BLOB, col : col + BLOB] = float(index % 2)
                self.masks[index, :, row : row + BLOB, col : col + BLOB] = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index], "mask": self.masks[index], "index": index}
