"""MSK backends of the COLMAP plugin: `sift+msk` extraction and the `learned` matcher."""

import math
from pathlib import Path

import numpy as np
import torch

from colmap_plugin.features import Extractor, Features, stored_descriptors
from colmap_plugin.keypoints import affine_keypoints, pixel_to_colmap
from colmap_plugin.matchers import Matcher, descriptors_to_tensor
from colmap_plugin.sift import SiftExtractor

from .data.patches import ImagePyramid
from .descriptor import describe_keypoints, describe_patches, descriptor_patches, native_bfloat16
from .detector import DetectionConf, detect
from .match_decision import keypoint_frames, propose_candidates
from .orientation import keypoint_orientations
from .refinement import converged_duplicates, refine_blobs
from .weights import (
    DESCRIPTOR_WEIGHTS,
    DETECTOR_WEIGHTS,
    MATCH_DECISION_WEIGHTS,
    load_descriptor,
    load_detector,
    load_match_decision,
    weights_fingerprint,
)

# Raised whenever the same weights and options give other features (extractors) or matches (the
# learned matcher), so that stores made before are refused rather than resumed. Features: 2: patches
# cut by msk.data.patches' own crop, blank ones dropped. 3: a quarter of the keypoint budget spread
# over the grid (msk.detector.DetectionConf.spread_share). 4: channels-last detector
# (msk.weights.load_detector), whose last-digit score changes swap ~0.1% of the keypoints. 5 (`msk`
# only, whose keypoints alone changed): keypoints refined over position and scale (msk.refinement),
# described at the refined scale. 6 (`msk`): a Newton step over x, y and scale in the refinement.
# 7 (`msk`): the refinement takes rounding-level differences of the LoG for ties (msk.refinement.NOISE_FLOOR).
# 8 (`msk`): second orientations fill the keypoint budget that detections leave. 9 (`msk`): detections
# refined onto a stronger one's blob are dropped and the budget refilled. 10 (`msk`): twins up to a scale
# and half an octave apart, from 1/8 more detections. 11 (and 5 for `sift+msk`): descriptors kept in float16
# (colmap_plugin.features.LEARNED_DESCRIPTOR_DTYPE). 12 (`msk`): detection on the image shrunk to the
# detector's training size (msk.detector.DetectionConf.max_image_size).
EXTRACTION_VERSION = 12
SIFT_MSK_EXTRACTION_VERSION = 5
# Matches: 1-4 shared the features' versions. 5: neighbours of both images shortlisted from one
# bfloat16 product (colmap_plugin.matchers.nearest_both_ways), which changes near ties. 6: without
# bfloat16, shortlisted from one float32 product, whose scores round differently from the exact search's.
MATCHING_VERSION = 6

# Keypoints refined, oriented, cut and described at a time: with arrays that stay in cache, extracting
# 8,192 keypoints on one thread is 1.4x faster than with all of them at once, with the same results.
KEYPOINT_CHUNK = 1024
# Detections beyond the budget, refined too, to replace those that converge onto a stronger one's blob
# (msk.refinement.converged_duplicates): 4.4% and 5.0% of a monstree and a drone_palm_desert image's 13,056.
DUPLICATE_MARGIN = 1 / 8


class RecordsWeights:
    """Mixin of MSK components: their identity (kept in the stores) names the weight files they load."""

    weight_files: tuple[Path, ...] = ()
    output_version: int

    def identity(self) -> dict:
        fingerprint = weights_fingerprint(*self.weight_files)
        return {**super().identity(), "weights": fingerprint, "version": self.output_version}


def resolve_bfloat16(option: bool | None) -> bool:
    """The `bfloat16` option of the MSK extractors and matcher: None means where the CPU has it natively."""
    return native_bfloat16() if option is None else bool(option)


class SiftMskExtractor(RecordsWeights, Extractor):
    """SIFT keypoints (COLMAP's), MSK descriptors; matched by the learned match decision."""

    weight_files = (DESCRIPTOR_WEIGHTS,)
    output_version = SIFT_MSK_EXTRACTION_VERSION
    name = "sift+msk"
    # bfloat16: None = where the CPU has it natively (msk.descriptor.native_bfloat16), resolved at creation.
    default_conf = {"max_keypoints": 8192, "num_threads": -1, "upright": False, "bfloat16": None}
    default_matcher = "learned"

    def __init__(self, **conf):
        super().__init__(**conf)
        self.conf["bfloat16"] = resolve_bfloat16(self.conf["bfloat16"])
        self.sift = SiftExtractor(**{k: v for k, v in self.conf.items() if k in SiftExtractor.default_conf})
        self.descriptor = load_descriptor()

    def extract(self, image: np.ndarray) -> Features:
        features = self.sift.extract(image)
        keypoints = affine_keypoints(features.keypoints, features.scales, features.orientations)
        # As the stores keep them, so that features in memory (benchmarks) and read back are the same.
        features.descriptors = stored_descriptors(
            describe_keypoints(self.descriptor, image, keypoints, bfloat16=self.conf["bfloat16"]).numpy()
        )
        return features


class MskExtractor(RecordsWeights, Extractor):
    """The full learned pipeline: MSK detector, blob-centre refinement, gradient orientation, MSK descriptors."""

    weight_files = (DETECTOR_WEIGHTS, DESCRIPTOR_WEIGHTS)
    output_version = EXTRACTION_VERSION
    name = "msk"
    # max_keypoints: COLMAP's SIFT finds ~12,000 on 1600-pixel images; at this budget `msk` built more 3D
    # points than at 8,192 on every scene measured, and verified no false pair then (session 7, BENCHMARKS.md).
    # refine: move detections to the LoG extremum over position and scale (msk.refinement), and drop those
    # that converge onto a stronger one's blob, refilling the budget from further detections.
    # max_orientations: 2 gives the strongest detections with a second orientation peak (SIFT's rule,
    # msk.orientation.SECOND_PEAK_RATIO) a second keypoint there, as long as the detections leave room
    # in max_keypoints: where the detector fills the budget (large, textured images) nothing changes,
    # and matching never costs more than at a full budget. On three small-image scenes it built 8-13%
    # more 3D points, on two others it registered 10 and 2 images more (BENCHMARKS.md, session 15).
    # 1: one orientation per keypoint.
    default_conf = {"max_keypoints": 12288, "upright": False, "refine": True, "max_orientations": 2, "bfloat16": None}
    default_matcher = "learned"

    def __init__(self, **conf):
        super().__init__(**conf)
        if self.conf["max_orientations"] not in (1, 2):
            raise ValueError(
                f"max_orientations must be 1 or 2 (SIFT's rule gives at most two), not {self.conf['max_orientations']}"
            )
        self.conf["bfloat16"] = resolve_bfloat16(self.conf["bfloat16"])
        self.detector = load_detector()
        self.descriptor = load_descriptor()

    @torch.inference_mode()
    def extract(self, image: np.ndarray) -> Features:
        tensor = torch.from_numpy(image).float().div(255)[None, None]
        budget = self.conf["max_keypoints"]
        detected = budget + math.ceil(DUPLICATE_MARGIN * budget) if self.conf["refine"] else budget
        detections = detect(self.detector, tensor, DetectionConf(max_keypoints=detected))
        xy = pixel_to_colmap(detections["xy"].numpy()).astype(np.float32)
        scales = detections["sigma"].numpy().astype(np.float32)
        scores = detections["score"].numpy().astype(np.float32)
        pyramid = ImagePyramid(image)  # built once for the patch crops
        if self.conf["refine"]:
            xy, scales, scores = self._refine(pyramid, xy, scales, scores)
        second_orientations = self.conf["max_orientations"] > 1 and not self.conf["upright"]
        room = budget - len(xy) if second_orientations else 0
        chunks = []
        for i in range(0, max(len(xy), 1), KEYPOINT_CHUNK):  # at least one: no detections go the same way
            *chunk, seconds = self._describe(
                pyramid, *(part[i : i + KEYPOINT_CHUNK] for part in (xy, scales, scores)), room
            )
            chunks.append(chunk)
            room -= seconds  # strongest first: the chunks come in the detector's order
        return Features(*(np.concatenate(parts) for parts in zip(*chunks)))

    def _refine(
        self, pyramid: ImagePyramid, xy: np.ndarray, scales: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """Refined xy (N', 2) and scales (N',) of detections (N, 2), (N,) strongest first, with their scores (N',):
        those that converged onto a stronger one's blob dropped, the rest cut to the budget."""
        refined = [
            refine_blobs(pyramid, xy[i : i + KEYPOINT_CHUNK], scales[i : i + KEYPOINT_CHUNK])
            for i in range(0, len(xy), KEYPOINT_CHUNK)
        ]
        if refined:
            xy, scales = (np.concatenate(parts) for parts in zip(*refined))
        distinct = ~converged_duplicates(xy, scales)
        return tuple(part[distinct][: self.conf["max_keypoints"]] for part in (xy, scales, scores))

    def _describe(
        self, pyramid: ImagePyramid, xy: np.ndarray, scales: np.ndarray, scores: np.ndarray, room: int
    ) -> tuple[np.ndarray | int, ...]:
        """xy, scales, orientations, scores and descriptors of keypoints (N, 2), (N,), (N,) and of up to
        `room` second orientations of the first of them, appended; and how many of those there are."""
        if self.conf["upright"]:
            orientations, seconds = np.zeros(len(xy), np.float32), np.zeros(0, np.int64)
        else:
            orientations, second = keypoint_orientations(pyramid, xy, scales)
            seconds = np.flatnonzero(np.isfinite(second))[:room]
            xy, scales, scores = (np.concatenate([part, part[seconds]]) for part in (xy, scales, scores))
            orientations = np.concatenate([orientations, second[seconds]])
        patches = descriptor_patches(pyramid, affine_keypoints(xy, scales, orientations))
        # A patch of a single grey level has nothing to describe: the image is flat all around the
        # keypoint, which the network's zero padding then finds at the corners of a blank image.
        informative = patches.max(axis=(1, 2)) > patches.min(axis=(1, 2))
        descriptors = describe_patches(self.descriptor, patches[informative], bfloat16=self.conf["bfloat16"])
        descriptors = stored_descriptors(descriptors.numpy())  # as SiftMskExtractor's
        described = (xy, scales, orientations, scores)
        return *(part[informative] for part in described), descriptors, len(seconds)


class LearnedMatcher(RecordsWeights, Matcher):
    """Nearest-neighbour candidates kept when the match-decision network accepts them."""

    weight_files = (MATCH_DECISION_WEIGHTS,)
    output_version = MATCHING_VERSION
    name = "learned"
    # threshold None: the one chosen at training time; both_ways: image 1's keypoints propose candidates too;
    # bfloat16: shortlist neighbours from a bfloat16 product, else a float32 one (None: bfloat16 where the
    # CPU has it natively).
    default_conf = {"threshold": None, "both_ways": True, "bfloat16": None}

    def __init__(self, **conf):
        super().__init__(**conf)
        self.conf["bfloat16"] = resolve_bfloat16(self.conf["bfloat16"])
        self.network, meta = load_match_decision()
        self.threshold = self.conf["threshold"] if self.conf["threshold"] is not None else meta["threshold"]

    @torch.inference_mode()
    def match(self, features0: Features, features1: Features) -> tuple[np.ndarray, np.ndarray]:
        if len(features0) == 0 or len(features1) == 0:
            return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        candidates = propose_candidates(
            descriptors_to_tensor(features0.descriptors),
            descriptors_to_tensor(features1.descriptors),
            *(
                keypoint_frames(torch.from_numpy(f.scales), torch.from_numpy(f.orientations))
                for f in (features0, features1)
            ),
            both_ways=self.conf["both_ways"],
            search="bfloat16" if self.conf["bfloat16"] else "float32",
        )
        probability = torch.sigmoid(self.network(candidates.features))
        keep = probability > self.threshold
        matches = torch.stack([candidates.index0[keep], candidates.index1[keep]], dim=1)
        return matches.numpy().astype(np.int64), probability[keep].numpy().astype(np.float32)
