"""The MSK match-decision network: is this nearest-neighbour candidate a true match?

Each keypoint of image 0 proposes its nearest neighbour in image 1. The network sees what makes
the decision easy for a human reading distance tables — the candidate's distance, the
distance to the second-best candidate on both sides, whether the pair is mutual — plus the
element-wise product of the two descriptors, which tells it how reliable this kind of
descriptor is, and whether the candidate agrees with the scale change and in-plane rotation
that most mutual candidates of the image pair agree on (true matches of one pair share them
roughly; false ones scatter). It outputs the probability that the two keypoints see the same
3D point.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from colmap_plugin.matchers import nearest_both_ways, similarity_to_distance

NUM_CONSISTENCY_FEATURES = 3  # scale-change and rotation deviations from the pair's consensus, upright flag
NUM_DISTANCE_FEATURES = 6
ROTATION_BINS = 36
MAX_SCALE_DEVIATION = 4.0  # octaves
SMOOTHING = torch.tensor([[[1.0, 2.0, 1.0]]])  # peaked, so the mode stays on the fullest bin


@dataclass(frozen=True)
class MatchDecisionConf:
    descriptor_dim: int = 128
    hidden: int = 64


@dataclass
class Candidates:
    """Nearest-neighbour proposals of image 0's keypoints in image 1.

    index0, index1: (N,) keypoint indices; features: (N, D + 3 + 6) network input (descriptor
    product, consistency features, distance features: the last column is the mutual flag).
    """

    index0: torch.Tensor
    index1: torch.Tensor
    features: torch.Tensor


def keypoint_frames(scales: torch.Tensor, orientations: torch.Tensor) -> torch.Tensor:
    """Frames (N, 2) = (log2 scale, orientation in radians) of keypoints with scales (N,) and orientations (N,)."""
    return torch.stack([torch.log2(scales.float().clamp(min=1e-6)), orientations.float()], dim=1)


def propose_candidates(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    both_ways: bool = False,
    search: str = "exact",
) -> Candidates:
    """Candidates and their features from L2-normalised descriptors (N, D), (M, D), M >= 1, and frames (N, 2), (M, 2).

    Each keypoint of image 0 proposes its nearest neighbour in image 1; with `both_ways`, each
    keypoint of image 1 also proposes its nearest neighbour in image 0 when that pair is not
    already proposed (not mutual). Both kinds are described from the proposer's side, so they
    look alike to the network, which is trained on image 0's proposals. `search`: see
    `colmap_plugin.matchers.nearest_both_ways`.
    """
    nearest0, nearest1 = nearest_both_ways(desc0, desc1, search)  # similarities and indices (N, k), (M, k)
    upright = not (frames0[:, 1].any() or frames1[:, 1].any())
    forward, consensus = _proposals(desc0, desc1, nearest0, nearest1, frames0, frames1, upright)
    if not both_ways:
        return forward
    # Image 1's view of the same pair: the opposite scale change and rotation.
    backward, _ = _proposals(desc1, desc0, nearest1, nearest0, frames1, frames0, upright, -consensus)
    new = backward.features[:, -1] == 0
    return Candidates(
        torch.cat([forward.index0, backward.index1[new]]),
        torch.cat([forward.index1, backward.index0[new]]),
        torch.cat([forward.features, backward.features[new]]),
    )


def _proposals(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    nearest0: tuple[torch.Tensor, torch.Tensor],
    nearest1: tuple[torch.Tensor, torch.Tensor],
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    upright: bool,
    consensus: torch.Tensor | None = None,
) -> tuple[Candidates, torch.Tensor]:
    """Image 0's nearest-neighbour proposals, given both sides' two nearest neighbours, and the pair's consensus.

    consensus: (2,) scale change and rotation from image 0 to image 1; None: read from these proposals.
    """
    (similarity0, neighbours0), (similarity1, neighbours1) = nearest0, nearest1
    index0 = torch.arange(len(desc0))
    index1 = neighbours0[:, 0]
    best = similarity0[:, 0]
    mutual = neighbours1[index1, 0] == index0
    # Second-best on image 0's side; on image 1's side the best rival of keypoint 0 for index1.
    second0 = similarity0[:, 1] if similarity0.shape[1] > 1 else torch.full_like(best, -1.0)
    if similarity1.shape[1] > 1:
        rival1 = torch.where(mutual, similarity1[index1, 1], similarity1[index1, 0])
    else:
        rival1 = torch.where(mutual, torch.full_like(best, -1.0), similarity1[index1, 0])
    distance = similarity_to_distance(best)
    ratio0 = distance / similarity_to_distance(second0).clamp(min=1e-6)
    ratio1 = distance / similarity_to_distance(rival1).clamp(min=1e-6)
    scalars = torch.stack([best, second0, rival1, ratio0.clamp(max=2), ratio1.clamp(max=2), mutual.float()], dim=1)
    change = frames1[index1] - frames0
    if consensus is None:
        consensus = pair_consensus(change, mutual)
    consistency = consistency_features(change, consensus, upright)
    features = torch.cat([desc0 * desc1[index1], consistency, scalars], dim=1)
    return Candidates(index0, index1, features), consensus


def pair_consensus(change: torch.Tensor, mutual: torch.Tensor) -> torch.Tensor:
    """(2,) scale change and rotation most of a pair's candidates agree on, from changes (N, 2) and mutual flags (N,).

    Read from the mutual candidates (all if none is): the median log2 scale ratio and the most
    common rotation (centre of the fullest bin of a 36-bin histogram, smoothed).
    """
    voters = change[mutual] if mutual.any() else change
    bins = ((voters[:, 1] % (2 * math.pi)) / (2 * math.pi) * ROTATION_BINS).long().clamp(0, ROTATION_BINS - 1)
    histogram = torch.bincount(bins, minlength=ROTATION_BINS).float()
    histogram = F.conv1d(F.pad(histogram[None, None], (1, 1), mode="circular"), SMOOTHING)[0, 0]
    rotation = (histogram.argmax().float() + 0.5) * (2 * math.pi / ROTATION_BINS)
    return torch.stack([voters[:, 0].median(), rotation])


def consistency_features(change: torch.Tensor, consensus: torch.Tensor, upright: bool) -> torch.Tensor:
    """(N, 3) features of candidates whose frames change by `change` (N, 2) = (log2 scale ratio, rotation).

    Features: |scale change - consensus| in octaves (at most 4), |rotation - consensus| / pi, and
    1 when neither image has orientations (upright keypoints: rotation says nothing).
    """
    scale_deviation = (change[:, 0] - consensus[0]).abs().clamp(max=MAX_SCALE_DEVIATION)
    rotation_deviation = torch.remainder(change[:, 1] - consensus[1] + math.pi, 2 * math.pi) - math.pi
    flag = torch.full_like(scale_deviation, float(upright))
    return torch.stack([scale_deviation, rotation_deviation.abs() / math.pi, flag], dim=1)


class MatchDecisionNet(nn.Module):
    """(N, D + 3 + 6) candidate features -> (N,) match logits."""

    def __init__(self, conf: MatchDecisionConf = MatchDecisionConf()):
        super().__init__()
        self.conf = conf
        self.mlp = nn.Sequential(
            nn.Linear(conf.descriptor_dim + NUM_CONSISTENCY_FEATURES + NUM_DISTANCE_FEATURES, conf.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(conf.hidden, conf.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(conf.hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).squeeze(1)

    def config(self) -> dict:
        return asdict(self.conf)
