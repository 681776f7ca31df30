"""`msk train matcher`: the match-decision network on nearest-neighbour candidates of SfM scenes.

Candidates are what the plugin sees at run time: every keypoint of image A proposes its nearest
neighbour among all keypoints of image B (MSK descriptors). Labels come from the SfM tracks:
  - positive: both keypoints observe the same 3D point;
  - negative: they observe different 3D points, or A's keypoint observes a point whose own
    observation in B is another keypoint, or the two images come from different scenes (views
    that do not overlap: the pairs that fooled verification in the past);
  - unknown (not used): keypoints without a 3D point, which SfM may simply have dropped.
Validation reports the precision/recall curve on held-out scenes against the ratio test on
the same candidates (and SIFT's ratio test as COLMAP runs it), and how many matches pairs of
non-overlapping views keep.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import pycolmap
import torch
from tqdm import tqdm

from colmap_plugin.images import read_image
from colmap_plugin.matchers import descriptors_to_tensor
from msk.data.build import BuildConf, default_work_dir
from msk.data.patches import keypoint_orientation, keypoint_scale
from msk.data.scenes import discover_scenes
from msk.data.sfm import load_tracks, reconstruct
from msk.descriptor import describe_keypoints
from msk.match_decision import (
    NUM_CONSISTENCY_FEATURES,
    NUM_DISTANCE_FEATURES,
    MatchDecisionConf,
    MatchDecisionNet,
    keypoint_frames,
    propose_candidates,
)
from msk.weights import DESCRIPTOR_WEIGHTS, MATCH_DECISION_WEIGHTS, load_descriptor

from .common import save_checkpoint, seed_everything

UNKNOWN = -1


@dataclass
class MatcherTrainConf:
    max_keypoints: int = 4096  # per image, a random subset, as a capped extractor would give
    max_images_per_scene: int = 12
    cross_scene_pairs: int = 2  # non-overlapping pairs per image, with images of other scenes
    upright_pairs: float = 0.2  # share of pairs seen without orientations, as upright extraction gives
    epochs: int = 30
    batch_size: int = 4096
    learning_rate: float = 3e-3
    seed: int = 0
    num_threads: int = 2


@dataclass
class ImageKeypoints:
    scene: str
    descriptors: torch.Tensor  # (K, D) MSK, L2-normalised
    sift: torch.Tensor  # (K, 128) COLMAP's SIFT descriptors, L2-normalised
    frames: torch.Tensor  # (K, 2) log2 scale and orientation (msk.match_decision.keypoint_frames)
    point: np.ndarray  # (K,) int64 global 3D point id, -1 if none


@dataclass
class CandidateSet:
    """Candidates of many image pairs. C: MSK candidates, C': SIFT candidates of the same pairs."""

    features: torch.Tensor  # (C, D + 3 + 6) network input
    label: torch.Tensor  # (C,) 1, 0 or UNKNOWN
    pair: np.ndarray  # (C,) index of the image pair
    cross_pairs: np.ndarray  # indices of the pairs whose images come from different scenes
    sift_ratio_score: np.ndarray  # (C',) the ratio test as a score, on SIFT's candidates
    sift_label: np.ndarray  # (C',)
    sift_pair: np.ndarray  # (C',)


def _describe_scene(
    scene, sfm_dir: Path, descriptor, conf: MatcherTrainConf, rng: np.random.Generator, point_base: int
):
    """Keypoints of up to `max_images_per_scene` registered images of a scene, described."""
    recon = reconstruct(scene, sfm_dir, BuildConf().sfm)
    tracks = load_tracks(recon)
    database = pycolmap.Database.open(recon.database)
    ids = {image.name: image.image_id for image in database.read_all_images()}
    chosen = rng.permutation(len(tracks.image_names))[: conf.max_images_per_scene]
    images = []
    for index in sorted(chosen):
        name = tracks.image_names[index]
        keypoints = tracks.keypoints[index]
        subset = np.sort(rng.permutation(len(keypoints))[: conf.max_keypoints])
        msk = describe_keypoints(descriptor, read_image(scene.image_dir / name).gray, keypoints[subset])
        sift = database.read_descriptors(ids[name]).data[subset]
        track = tracks.keypoint_track[index][subset]
        frames = keypoint_frames(
            torch.from_numpy(keypoint_scale(keypoints[subset])),
            torch.from_numpy(keypoint_orientation(keypoints[subset])),
        )
        images.append(
            ImageKeypoints(
                scene.name, msk, descriptors_to_tensor(sift), frames, np.where(track >= 0, track + point_base, UNKNOWN)
            )
        )
    database.close()
    return images, point_base + tracks.num_tracks


def _labels(point0: np.ndarray, point1: np.ndarray, index1: np.ndarray, cross_scene: bool) -> np.ndarray:
    """Labels of candidates (keypoint i of A, index1[i] of B) from their 3D points (-1: none)."""
    if cross_scene:
        return np.zeros(len(point0), np.int64)
    candidate_point = point1[index1]
    seen_in_b = np.isin(point0, point1[point1 >= 0])
    label = np.full(len(point0), UNKNOWN)
    tracked = point0 >= 0
    label[tracked & (candidate_point >= 0)] = 0
    label[tracked & seen_in_b] = 0
    label[tracked & (candidate_point == point0)] = 1
    return label


def ratio_test_score(features: torch.Tensor) -> np.ndarray:
    """The mutual ratio test (both directions, as COLMAP) as a score: accept when score >= -ratio."""
    ratio = torch.maximum(features[:, -3], features[:, -2])
    return torch.where(features[:, -1] > 0, -ratio, torch.full_like(ratio, -10.0)).numpy()


def collect_candidates(images: list[ImageKeypoints], conf: MatcherTrainConf, rng: np.random.Generator) -> CandidateSet:
    """Candidates of every same-scene image pair plus a few cross-scene pairs per image."""
    pairs = [
        (i, j) for i in range(len(images)) for j in range(i + 1, len(images)) if images[i].scene == images[j].scene
    ]
    for i in range(len(images)):
        others = [j for j in range(len(images)) if images[j].scene != images[i].scene]
        pairs += [(i, int(j)) for j in rng.choice(others, min(conf.cross_scene_pairs, len(others)), replace=False)]
    features, labels, pair_ids, sift_scores, sift_labels, sift_pair_ids, cross_pairs = [], [], [], [], [], [], []
    for pair_id, (i, j) in enumerate(tqdm(pairs, desc="candidates", unit="pair")):
        a, b = images[i], images[j]
        cross = a.scene != b.scene
        frames = (a.frames, b.frames)
        if rng.random() < conf.upright_pairs:
            frames = tuple(torch.stack([f[:, 0], torch.zeros(len(f))], dim=1) for f in frames)
        msk = propose_candidates(a.descriptors, b.descriptors, *frames)
        sift = propose_candidates(a.sift, b.sift, *frames)
        features.append(msk.features)
        labels.append(_labels(a.point, b.point, msk.index1.numpy(), cross))
        pair_ids.append(np.full(len(msk.index0), pair_id))
        sift_scores.append(ratio_test_score(sift.features))
        sift_labels.append(_labels(a.point, b.point, sift.index1.numpy(), cross))
        sift_pair_ids.append(np.full(len(sift.index0), pair_id))
        if cross:
            cross_pairs.append(pair_id)
    return CandidateSet(
        features=torch.cat(features),
        label=torch.from_numpy(np.concatenate(labels)),
        pair=np.concatenate(pair_ids),
        cross_pairs=np.array(cross_pairs, np.int64),
        sift_ratio_score=np.concatenate(sift_scores),
        sift_label=np.concatenate(sift_labels),
        sift_pair=np.concatenate(sift_pair_ids),
    )


def precision_recall(score: np.ndarray, label: np.ndarray, num_positives: int, thresholds: np.ndarray) -> list[dict]:
    """Precision and recall of accepting candidates with score >= t, for each threshold t.

    Recall counts against `num_positives`, the true matches among all candidates of a method,
    so methods with different candidate sets compare fairly on the same scenes.
    """
    curve = []
    for t in thresholds:
        accepted = score >= t
        true = int(np.sum(accepted & (label == 1)))
        false = int(np.sum(accepted & (label == 0)))
        curve.append(
            {"threshold": float(t), "precision": true / max(true + false, 1), "recall": true / max(num_positives, 1)}
        )
    return curve


def train_matcher(
    dataset: Path,
    scenes_dir: Path,
    output: Path = MATCH_DECISION_WEIGHTS,
    conf: MatcherTrainConf = MatcherTrainConf(),
    sfm_dir: Path | None = None,
    descriptor_weights: Path = DESCRIPTOR_WEIGHTS,
) -> dict:
    """Train on the scenes of `dataset` (its splits), reusing their SfM reconstructions in `sfm_dir`."""
    generator = seed_everything(conf.seed, conf.num_threads)
    rng = np.random.default_rng(conf.seed)
    with h5py.File(dataset, "r") as f:
        split = {name: group.attrs["split"] for name, group in f["scenes"].items()}
    sfm_dir = Path(sfm_dir) if sfm_dir else default_work_dir(Path(dataset)) / "sfm"
    descriptor = load_descriptor(descriptor_weights)
    images: dict[str, list[ImageKeypoints]] = {"train": [], "val": []}
    point_base = 0
    for scene in tqdm(
        [s for s in discover_scenes(scenes_dir) if s.name in split], desc="describe scenes", unit="scene"
    ):
        described, point_base = _describe_scene(scene, sfm_dir, descriptor, conf, rng, point_base)
        images[split[scene.name]] += described
    train, val = collect_candidates(images["train"], conf, rng), collect_candidates(images["val"], conf, rng)

    known = train.label != UNKNOWN
    x, y = train.features[known], train.label[known].float()
    model = MatchDecisionNet(
        MatchDecisionConf(descriptor_dim=x.shape[1] - NUM_CONSISTENCY_FEATURES - NUM_DISTANCE_FEATURES)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=conf.learning_rate)
    positive_weight = (y == 0).sum() / (y == 1).sum().clamp(min=1)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=positive_weight)
    start = time.perf_counter()
    for epoch in tqdm(range(conf.epochs), desc="train matcher", unit="epoch"):
        model.train()
        for batch in torch.randperm(len(x), generator=generator).split(conf.batch_size):
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.inference_mode():
        train_probability = torch.sigmoid(model(x)).numpy()
        val_probability = torch.sigmoid(model(val.features)).numpy()
    threshold = _best_f1_threshold(train_probability, y.numpy())
    meta = {
        "dataset": str(dataset),
        "train_candidates": int(known.sum()),
        "train_conf": asdict(conf),
        "threshold": threshold,
        "validation": validation_report(val, val_probability, threshold),
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_checkpoint(Path(output), model, meta)
    return meta


def _best_f1_threshold(probability: np.ndarray, label: np.ndarray) -> float:
    curve = precision_recall(probability, label, int(label.sum()), np.linspace(0.05, 0.95, 19))
    best = max(curve, key=lambda p: 2 * p["precision"] * p["recall"] / max(p["precision"] + p["recall"], 1e-9))
    return round(best["threshold"], 2)


def validation_report(val: CandidateSet, probability: np.ndarray, threshold: float) -> dict:
    """Curves of the learned decision, the ratio test on MSK and on SIFT; false-pair matches."""
    label = val.label.numpy()
    positives = int(np.sum(label == 1))
    ratios = np.round(np.linspace(0.5, 1.0, 26), 2)
    msk_ratio_score = ratio_test_score(val.features)
    is_cross = np.isin(val.pair, val.cross_pairs)
    num_cross = max(len(val.cross_pairs), 1)
    return {
        "positives": positives,
        "curves": {
            "learned": precision_recall(probability, label, positives, np.round(np.linspace(0.02, 0.98, 49), 2)),
            "ratio_msk": precision_recall(msk_ratio_score, label, positives, -ratios),
            "ratio_sift": precision_recall(
                val.sift_ratio_score, val.sift_label, int(np.sum(val.sift_label == 1)), -ratios
            ),
        },
        "learned_at_threshold": precision_recall(probability, label, positives, np.array([threshold]))[0],
        "false_pair_matches_per_pair": {
            "learned": float(np.sum(is_cross & (probability >= threshold)) / num_cross),
            "ratio_msk_0.8": float(np.sum(is_cross & (msk_ratio_score >= -0.8)) / num_cross),
            "ratio_sift_0.8": float(
                np.sum(np.isin(val.sift_pair, val.cross_pairs) & (val.sift_ratio_score >= -0.8)) / num_cross
            ),
        },
    }
