"""Descriptor matchers: batched nearest-neighbour search in torch on the CPU."""

import math
from abc import ABC, abstractmethod
from typing import Any, Iterator

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


# How the learned matcher finds each keypoint's two most similar keypoints in the other image (nearest_both_ways).
SEARCHES = ("exact", "float32", "bfloat16")
SHORTLIST_MIN_KEYPOINTS = 4096  # below it the exact search is about as fast, and slower matching is cheap
# Rows of the similarity matrix formed at a time: top-k over a block that is still in cache made the
# search 1.3x faster for 8,192 keypoints a side (one thread, bfloat16) than over the whole matrix.
# The shortlists form their product in the same blocks, which must hold whole groups of GROUP rows.
ROW_BLOCK = 256
# The shortlists group the keypoints of each side by GROUP and keep, for each keypoint, the groups of the
# other side with the highest maxima, as many as SHORTLIST gives for the product's type: their members
# are then scored in float32. Float32 maxima are exact, so the best two groups hold both nearest
# neighbours (with 4, the search took 7-10% longer for the same neighbours); bfloat16 ones are not, and
# the best 4 hold at least the 4 most similar as bfloat16 computes them.
GROUP = 8
SHORTLIST = {torch.float32: 2, torch.bfloat16: 4}
# Keypoints whose shortlists are scored at a time: their 2 MB of candidates stay in cache, which
# scores 8,192 keypoints' shortlists 5x faster than 1,024 at a time.
RESCORE_ROWS = 128

Nearest = tuple[torch.Tensor, torch.Tensor]  # similarities (N, k) and indices (N, k), most similar first


def _similarity_blocks(desc0: torch.Tensor, desc1: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, desc0[start : start + ROW_BLOCK] @ desc1.T) for each block of rows of desc0 (N, D); desc1 (M, D).

    Each block is formed in the same buffer, which the next one overwrites: reduce it before asking for the
    next. A fresh 6-12 MB block took as long to allocate and touch as to compute, and the product reads
    desc1.T fastest when laid out contiguously: between 12,288 keypoints a side, 0.05 s instead of 0.13 s for
    all bfloat16 blocks (one thread, session 19), with the same values. For inference only: a product into
    a given buffer records no gradients.
    """
    desc1_t = desc1.T.contiguous()
    buffer = torch.empty(min(ROW_BLOCK, len(desc0)), len(desc1), dtype=desc0.dtype)
    for start in range(0, len(desc0), ROW_BLOCK):
        rows = desc0[start : start + ROW_BLOCK]
        yield start, torch.mm(rows, desc1_t, out=buffer[: len(rows)])


def _most_similar(desc0: torch.Tensor, desc1: torch.Tensor, k: int) -> Nearest:
    """The k rows of desc1 (M, D) most similar to each row of desc0 (N, D)."""
    blocks = [similarity.topk(k, dim=1) for _, similarity in _similarity_blocks(desc0, desc1)]
    if not blocks:
        return (desc0 @ desc1.T).topk(k, dim=1)
    return torch.cat([block.values for block in blocks]), torch.cat([block.indices for block in blocks])


def nearest_both_ways(desc0: torch.Tensor, desc1: torch.Tensor, search: str = "exact") -> tuple[Nearest, Nearest]:
    """The k <= 2 most similar rows of desc1 (M, D) for each row of desc0 (N, D), and of desc0 for each row of desc1.

    Returns ((N, k) similarities, (N, k) indices) and ((M, k'), (M, k')), k = min(2, M), k' = min(2, N),
    most similar first. `search` (one of SEARCHES):
      - exact: one float32 product per direction, each row's values from its own product, as the match
        decision's training candidates were computed.
      - float32, bfloat16 (both sides at least SHORTLIST_MIN_KEYPOINTS, else exact): one product of that
        type shortlists candidates for both directions (`_group_shortlists`), which are then scored in
        float32. From a float32 product the shortlists hold both nearest neighbours of every keypoint,
        so the scores differ from the exact search's by rounding alone (up to 6e-7 on the pair below),
        which can swap two neighbours only where they tie to that precision. Between two
        fountain images' 12,288 `msk` keypoints, on one thread, the exact search takes 0.72-0.74 s, float32
        shortlists 0.40-0.44 s, and bfloat16 ones 0.31-0.34 s (the same two neighbours for 99.98% of
        keypoints). With torch and MKL held to AVX2, as on CPUs without AVX-512, the first two take 1.05
        and 0.58-0.60 s (scripts/bfloat16_agreement.py, session 19).
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if search == "exact" or min(len(desc0), len(desc1)) < SHORTLIST_MIN_KEYPOINTS:
        return _most_similar(desc0, desc1, min(2, len(desc1))), _most_similar(desc1, desc0, min(2, len(desc0)))
    dtype = torch.bfloat16 if search == "bfloat16" else torch.float32
    shortlist0, shortlist1 = _group_shortlists(desc0, desc1, dtype)
    return _rescored(desc0, desc1, shortlist0), _rescored(desc1, desc0, shortlist1)


def _group_shortlists(
    desc0: torch.Tensor, desc1: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate indices (N, S * GROUP) into desc1 (M, D) and (M, S * GROUP) into desc0 (N, D), S = SHORTLIST[dtype].

    Both come from one similarity matrix in `dtype`, formed ROW_BLOCK rows at a time and reduced to
    group maxima along both axes. A keypoint's nearest neighbour lies in the group with the highest
    maximum, its second in that group or in the one with the next: float32 maxima keep both in the
    shortlist. Torch vectorises a maximum over a middle axis, but is 7x slower over the last one, so
    desc1's groups are strided (with M' = M padded to a multiple of GROUP, group c holds keypoints
    c, c + M' / GROUP, ...) and desc0's are consecutive. Both sides are padded with zero rows to a
    multiple of GROUP, whose similarities count as -inf; indices of padding (>= M, >= N) may still appear
    in the shortlists, as members of a group with real ones.
    """
    rows, columns = (_padded(desc, GROUP).to(dtype) for desc in (desc0, desc1))
    column_groups, row_groups = len(columns) // GROUP, len(rows) // GROUP
    columns_shortlisted, rows_shortlisted = min(SHORTLIST[dtype], column_groups), min(SHORTLIST[dtype], row_groups)
    best_column_groups = []
    # Stored transposed, as each block is reduced: top-k over the last axis is fast, over the first one slow.
    row_group_maxima = torch.empty(len(columns), row_groups, dtype=dtype)  # (M', N' / GROUP)
    for start, similarity in _similarity_blocks(rows, columns):  # (B, M'), whole groups of rows: ROW_BLOCK % GROUP == 0
        # Padding scores 0 against everything, above a keypoint's neighbours where those score below 0.
        similarity[:, len(desc1) :] = -math.inf
        similarity[len(desc0) - start :] = -math.inf
        column_group_maxima = similarity.view(len(similarity), GROUP, column_groups).amax(dim=1)
        best_column_groups.append(column_group_maxima.topk(columns_shortlisted, dim=1).indices)
        block_maxima = similarity.view(-1, GROUP, similarity.shape[1]).amax(dim=1)  # (B / GROUP, M')
        row_group_maxima[:, start // GROUP : start // GROUP + len(block_maxima)] = block_maxima.T
    best_row_groups = row_group_maxima.topk(rows_shortlisted, dim=1).indices
    members = torch.arange(GROUP)
    shortlist0 = (torch.cat(best_column_groups)[:, :, None] + members * column_groups).flatten(1)
    shortlist1 = (best_row_groups[:, :, None] * GROUP + members).flatten(1)
    return shortlist0[: len(desc0)], shortlist1[: len(desc1)]


def _padded(desc: torch.Tensor, multiple: int) -> torch.Tensor:
    """desc (N, D) with zero rows appended up to a multiple of `multiple`."""
    return torch.nn.functional.pad(desc, (0, 0, 0, -len(desc) % multiple))


def _rescored(desc0: torch.Tensor, desc1: torch.Tensor, shortlist: torch.Tensor) -> Nearest:
    """The two most similar of each row's shortlisted rows (N, S) of desc1 (M, D), M >= 2, scored in float32.

    Indices >= M (padding) are never chosen: every shortlist holds at least two real rows.
    """
    padding = shortlist >= len(desc1)
    shortlist = shortlist.masked_fill(padding, 0)
    parts = []
    for start in range(0, len(desc0), RESCORE_ROWS):
        candidate_indices = shortlist[start : start + RESCORE_ROWS]  # (R, S)
        # index_select is 2.7x faster than indexing with the 2D tensor, the product and sum 1.4x than einsum.
        candidates = desc1.index_select(0, candidate_indices.flatten()).view(*candidate_indices.shape, -1)
        parts.append((candidates * desc0[start : start + RESCORE_ROWS, None]).sum(dim=-1))
    similarity = torch.cat(parts).masked_fill(padding, -math.inf)
    best, order = similarity.topk(2, dim=1)
    return best, shortlist.gather(1, order)


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
    (similarity0, nearest0), (similarity1, nearest1) = nearest_both_ways(desc0, desc1)  # (N, k), (M, k)
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
