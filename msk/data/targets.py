"""What to cut out of a reconstructed scene: which tracks become patches, which spots detector samples.

Detector samples are labelled by what SfM did with SIFT's detections, at the keypoint's own scale:
  - TRACKED (positive): a keypoint that became part of a 3D track;
  - UNTRACKED (negative): a keypoint SIFT detected that never made it into a track, with no
    tracked keypoint at the same spot and scale (SIFT duplicates a spot with several
    orientations; if one of them is tracked the spot is good);
  - EMPTY (negative): a random location and scale where SIFT detected nothing, with scales drawn
    from the image's tracked keypoints, so that scale alone does not give the label away.
"At the same spot and scale" means: closer than `near * max(sigma_1, sigma_2)` and scales
within a factor of 2 (one octave). Positives therefore come at every scale SIFT detects at,
and the detector is taught which detections are worth keeping, not just where SIFT fires.
"""

from dataclasses import dataclass

import numpy as np

from .patches import keypoint_scale
from .sfm import SceneTracks

TRACKED, UNTRACKED, EMPTY = 0, 1, 2
# Candidates drawn per requested sample; most candidates pass the "not near" test.
_OVERSAMPLE = 4


@dataclass(frozen=True)
class SampleConf:
    max_points_per_scene: int = 4000  # tracks kept per scene; bounds file size and memory per scene
    max_views_per_point: int = 8  # observations kept per track
    detector_tracked_per_image: int = 128
    detector_untracked_per_image: int = 64
    detector_empty_per_image: int = 64
    near: float = 1.0


@dataclass
class DetectorSamples:
    xy: np.ndarray  # (D, 2) float32 COLMAP corner-origin pixels
    scale: np.ndarray  # (D,) float32 sigma in pixels
    kind: np.ndarray  # (D,) uint8 TRACKED / UNTRACKED / EMPTY
    keypoint_idx: np.ndarray  # (D,) int64 keypoint index in the image, -1 for EMPTY


def select_observations(
    tracks: SceneTracks, conf: SampleConf, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cap tracks and views per track at random.

    Returns the kept tracks (T',) and kept observation indices (O',) into `tracks.obs_*`,
    grouped by track in the order of the kept tracks.
    """
    keep_tracks = np.arange(tracks.num_tracks)
    if len(keep_tracks) > conf.max_points_per_scene:
        keep_tracks = np.sort(rng.choice(keep_tracks, conf.max_points_per_scene, replace=False))
    obs = []
    for t in keep_tracks:
        views = np.arange(tracks.track_offsets[t], tracks.track_offsets[t + 1])
        if len(views) > conf.max_views_per_point:
            views = np.sort(rng.choice(views, conf.max_views_per_point, replace=False))
        obs.append(views)
    return keep_tracks, np.concatenate(obs) if obs else np.zeros(0, np.int64)


def _near(xy_a: np.ndarray, scale_a: np.ndarray, xy_b: np.ndarray, scale_b: np.ndarray, near: float) -> np.ndarray:
    """(A,) whether each point a has some point b at the same spot and scale."""
    if len(xy_b) == 0:
        return np.zeros(len(xy_a), bool)
    dist = np.linalg.norm(xy_a[:, None] - xy_b[None], axis=-1)
    ratio = scale_a[:, None] / scale_b[None]
    same = (dist < near * np.maximum(scale_a[:, None], scale_b[None])) & (ratio < 2) & (ratio > 0.5)
    return same.any(axis=1)


def detector_samples(
    keypoints: np.ndarray,
    keypoint_track: np.ndarray,
    size: tuple[int, int],
    conf: SampleConf,
    rng: np.random.Generator,
) -> DetectorSamples:
    """Labelled detector samples of one registered image (so it has tracked keypoints).

    From its (K, 6) COLMAP keypoints, their track indices (K,) (-1: none) and its (width, height).
    """
    xy = keypoints[:, :2]
    scale = keypoint_scale(keypoints)
    tracked = np.flatnonzero(keypoint_track >= 0)
    untracked = np.flatnonzero(keypoint_track < 0)

    pos = rng.permutation(tracked)[: conf.detector_tracked_per_image]

    cand = rng.permutation(untracked)[: _OVERSAMPLE * conf.detector_untracked_per_image]
    hard = cand[~_near(xy[cand], scale[cand], xy[tracked], scale[tracked], conf.near)]
    hard = hard[: conf.detector_untracked_per_image]

    n = _OVERSAMPLE * conf.detector_empty_per_image
    empty_xy = rng.uniform((0, 0), size, (n, 2))
    empty_scale = rng.choice(scale[tracked], n)
    free = np.flatnonzero(~_near(empty_xy, empty_scale, xy, scale, conf.near))[: conf.detector_empty_per_image]
    empty_xy, empty_scale = empty_xy[free], empty_scale[free]

    kp = np.concatenate([pos, hard])
    return DetectorSamples(
        xy=np.concatenate([xy[kp], empty_xy]).astype(np.float32),
        scale=np.concatenate([scale[kp], empty_scale]).astype(np.float32),
        kind=np.concatenate(
            [np.full(len(pos), TRACKED), np.full(len(hard), UNTRACKED), np.full(len(empty_xy), EMPTY)]
        ).astype(np.uint8),
        keypoint_idx=np.concatenate([kp, np.full(len(empty_xy), -1)]).astype(np.int64),
    )
