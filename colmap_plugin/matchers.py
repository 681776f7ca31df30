"""Descriptor matchers: batched nearest-neighbour search in torch on the CPU."""

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from .features import Configurable, Features, import_registered


def descriptors_to_tensor(descriptors: np.ndarray) -> torch.Tensor:
    """(N, D) descriptors of any stored dtype as L2-normalised float32 rows."""
    tensor = torch.from_numpy(np.ascontiguousarray(descriptors)).float()
    return torch.nn.functional.normalize(tensor, dim=1)


def similarity_to_distance(similarity: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of unit vectors from their dot product."""
    return (2 - 2 * similarity).clamp(min=0).sqrt()


SHORTLIST = 4  # bfloat16 neighbours re-scored exactly in float32
BFLOAT16_MIN_KEYPOINTS = 4096  # below it the float32 product is about as fast, and slower matching is cheap
# Rows of the similarity matrix formed at a time: top-k over a block that is still in cache makes
# the search 1.3x faster for 8,192 keypoints a side (one thread, bfloat16) than over the whole matrix.
ROW_BLOCK = 256


def _most_similar(desc0: torch.Tensor, desc1: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities (N, k) and indices (N, k) of the k rows of desc1 (M, D) most similar to each row of desc0 (N, D)."""
    blocks = [(desc0[start : start + ROW_BLOCK] @ desc1.T).topk(k, dim=1) for start in range(0, len(desc0), ROW_BLOCK)]
    if not blocks:
        return (desc0 @ desc1.T).topk(k, dim=1)
    return torch.cat([block.values for block in blocks]), torch.cat([block.indices for block in blocks])


def two_nearest(desc0: torch.Tensor, desc1: torch.Tensor, bfloat16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities (N, k) and indices (N, k) of the k <= 2 most similar rows of desc1.

    With `bfloat16` (and both sides at least BFLOAT16_MIN_KEYPOINTS), the similarity matrix is
    computed in bfloat16 only to shortlist each row's best SHORTLIST, whose similarities are then
    computed exactly: 1.8x faster for ~11,000 keypoints a side on a CPU with native bfloat16; the
    nearest neighbour changes only for near ties (0.13% of them; scripts/bfloat16_agreement.py).
    """
    # One matmul per direction and a row-wise top-k: top-k along columns is slower than the matmul.
    k = min(2, len(desc1))
    if not bfloat16 or min(len(desc0), len(desc1)) < BFLOAT16_MIN_KEYPOINTS:
        return _most_similar(desc0, desc1, k)
    _, shortlist = _most_similar(desc0.bfloat16(), desc1.bfloat16(), min(SHORTLIST, len(desc1)))
    exact = torch.einsum("nd,nkd->nk", desc0, desc1[shortlist])
    similarity, order = exact.topk(k, dim=1)
    return similarity, shortlist.gather(1, order)


@torch.inference_mode()
def nearest_neighbour_match(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    ratio_threshold: float | None = None,
    distance_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of L2-normalised descriptors (N, D) and (M, D).

    Optional Lowe ratio test (in both directions) and maximum descriptor distance.
    Returns matches (K, 2) int64 indices and their similarity scores (K,) float32.
    """
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    similarity0, nearest0 = two_nearest(desc0, desc1)  # (N, k)
    similarity1, nearest1 = two_nearest(desc1, desc0)  # (M, k)
    index0 = torch.arange(len(desc0))
    best0 = nearest0[:, 0]
    keep = nearest1[best0, 0] == index0
    if ratio_threshold is not None:
        for similarity in (similarity0, similarity1[best0]):
            if similarity.shape[1] == 2:
                distance = similarity_to_distance(similarity)
                keep &= distance[:, 0] <= ratio_threshold * distance[:, 1]
    if distance_threshold is not None:
        keep &= similarity_to_distance(similarity0[:, 0]) <= distance_threshold
    matches = torch.stack([index0[keep], best0[keep]], dim=1)
    return matches.numpy().astype(np.int64), similarity0[keep, 0].numpy().astype(np.float32)


class Matcher(Configurable, ABC):
    """Decides which keypoints of two images match. Subclasses set `name` and `default_conf`."""

    @abstractmethod
    def match(self, features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        """Matches (K, 2) int64 keypoint indices and scores (K,) float32."""


class MutualNearestNeighbourMatcher(Matcher):
    name = "mnn"
    default_conf = {"max_distance": None}

    def match(self, features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        return nearest_neighbour_match(
            descriptors_to_tensor(features0.descriptors),
            descriptors_to_tensor(features1.descriptors),
            distance_threshold=self.conf["max_distance"],
        )


class RatioTestMatcher(Matcher):
    """Mutual nearest neighbours passing Lowe's ratio test; COLMAP's SIFT defaults."""

    name = "ratio"
    default_conf = {"ratio": 0.8, "max_distance": 0.7}

    def match(self, features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        return nearest_neighbour_match(
            descriptors_to_tensor(features0.descriptors),
            descriptors_to_tensor(features1.descriptors),
            ratio_threshold=self.conf["ratio"],
            distance_threshold=self.conf["max_distance"],
        )


MATCHERS: dict[str, str] = {
    "mnn": "colmap_plugin.matchers:MutualNearestNeighbourMatcher",
    "ratio": "colmap_plugin.matchers:RatioTestMatcher",
    "learned": "msk.plugin:LearnedMatcher",
}


def create_matcher(name: str, **conf: Any) -> Matcher:
    return import_registered(MATCHERS, name, "matcher")(**conf)
