"""The MSK networks' building blocks, checked on inputs whose answers are known."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msk.descriptor import DescriptorConf, TripletDescriptor, fuse_for_inference
from msk.detector import (
    DetectionConf,
    DetectorConf,
    MskDetector,
    detect,
    neighbourhood_max,
    sample_scores,
    soft_argmax_offset,
    spread_top_k,
)
from msk.match_decision import keypoint_frames, propose_candidates
from msk.orientation import dominant_orientation, keypoint_orientations
from msk.train.common import fpr_at_recall
from msk.train.descriptor import hardest_negative_triplet_loss
from msk.train.detector import localisation_terms
from msk.weights import load_detector


def test_fused_descriptor_matches_the_trained_one_and_is_unit_length():
    torch.manual_seed(0)
    model = TripletDescriptor(DescriptorConf()).eval()
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    patches = torch.rand(16, 1, 32, 32)
    with torch.inference_mode():
        reference = model(patches)
        fused = fuse_for_inference(model)(patches.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(reference, fused, atol=1e-4)
    assert torch.allclose(fused.norm(dim=1), torch.ones(16), atol=1e-5)


@pytest.mark.parametrize("patch_size", [8, 16, 32, 48])
def test_descriptor_embeds_any_patch_side_that_is_a_multiple_of_4_into_dim_numbers(patch_size):
    model = TripletDescriptor(DescriptorConf(patch_size=patch_size)).eval()
    with torch.inference_mode():
        assert model(torch.rand(3, 1, patch_size, patch_size)).shape == (3, 128)


@pytest.mark.parametrize("patch_size", [2, 30, 34])
def test_descriptor_refuses_patch_sides_that_would_leave_several_cells(patch_size):
    # 30 would leave 2x2 cells of the last convolution: 512 numbers, not a 128-D descriptor.
    with pytest.raises(ValueError, match="multiple of 4"):
        DescriptorConf(patch_size=patch_size)


def test_triplet_loss_vanishes_only_when_negatives_are_far():
    anchors = torch.eye(4)
    assert hardest_negative_triplet_loss(anchors, anchors, margin=1.0) == 0  # negatives sqrt(2) away
    swapped = anchors[[1, 0, 2, 3]]
    assert hardest_negative_triplet_loss(anchors, swapped, margin=1.0) > 1


def test_fpr95_counts_negatives_closer_than_the_recall_threshold():
    distances = np.array([0.1] * 19 + [0.5] + [0.05, 0.6, 0.7, 0.8])
    is_match = np.array([True] * 20 + [False] * 4)
    assert fpr_at_recall(distances, is_match, 0.95) == 0.25


class FixedScaleSpace(torch.nn.Module):
    """Stands in for the detector network: returns given score maps, with the real scale geometry."""

    def __init__(self, octaves: list[torch.Tensor]):
        super().__init__()
        self.octaves = octaves
        self.sharpness = torch.tensor(1.0)
        self.conf = DetectorConf(levels_per_octave=octaves[0].shape[1], num_octaves=len(octaves))

    def forward(self, image):
        return self.octaves


def test_sample_scores_interpolate_between_cells_and_clamp_at_the_border():
    # Octave 0 (stride 2): cell (i, j) is centred on input pixel (2 j + 0.5, 2 i + 0.5).
    maps = torch.zeros(1, 3, 2, 3)
    maps[0, 1] = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])  # level 1: value = 3 row + col
    thin = torch.tensor([[[[7.0], [9.0]]]]).expand(1, 3, 2, 1)  # a map one cell wide
    xy = torch.tensor([[1.5, 1.5], [2.5, 0.5], [-10.0, 0.5], [50.0, 50.0]])  # centre-origin input pixels
    index = torch.ones(4)  # level 1
    values = sample_scores([maps], xy, index, torch.zeros(4, dtype=torch.long))
    # (0.5, 0.5) cells: the mean of the four; (1, 0): a cell; left of the map: column 0; far out: the corner.
    torch.testing.assert_close(values, torch.tensor([2.0, 1.0, 0.0, 5.0]))
    values = sample_scores([thin], torch.tensor([[30.0, 1.5]]), index[:1], torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(values, torch.tensor([8.0]))


def test_detection_and_training_agree_on_where_a_peak_is():
    conf = DetectorConf()
    octaves = [torch.full((1, 3, 64 // 2**o, 96 // 2**o), -5.0) for o in range(2)]
    octaves[1][0, 2, 10, 20] = 3.0  # octave 1 (stride 4), level 2
    model = FixedScaleSpace(octaves)
    found = detect(model, torch.zeros(1, 1, 128, 192), DetectionConf(max_keypoints=10))
    assert len(found["xy"]) == 1
    assert torch.allclose(found["xy"][0], torch.tensor([20 * 4 + 1.5, 10 * 4 + 1.5]))
    expected_sigma = conf.sigma0 * 2 ** (1 + 2 / 3)
    assert math.isclose(found["sigma"][0].item(), expected_sigma, rel_tol=1e-5)
    index = MskDetector(conf).scale_index(found["sigma"])
    logit = sample_scores(octaves, found["xy"], index, torch.zeros(1, dtype=torch.long))
    assert math.isclose(logit.item(), 3.0, rel_tol=1e-5)


def test_images_larger_than_the_detection_size_are_detected_shrunk_with_keypoints_in_their_own_pixels():
    """The detector sees images no larger than in training; keypoints come back where the caller refines them."""
    generator = torch.Generator().manual_seed(0)
    small = F.avg_pool2d(torch.rand(1, 1, 400, 600, generator=generator), 5, stride=1, padding=2)
    large = F.interpolate(small, scale_factor=2, mode="nearest")  # area averaging shrinks it back to `small`
    model, conf = load_detector(), DetectionConf(max_keypoints=500, max_image_size=600)
    in_small, in_large = detect(model, small, conf), detect(model, large, conf)
    assert len(in_small["xy"]) == 500
    assert torch.allclose(in_large["xy"], (in_small["xy"] + 0.5) * 2 - 0.5)  # centre-origin pixels of `large`
    assert torch.allclose(in_large["sigma"], 2 * in_small["sigma"])
    assert torch.equal(in_large["score"], in_small["score"])
    # A shrink by a rounded, slightly different factor per axis: 500x333 -> 400x266.
    odd = large[..., :333, :500]
    shrunk = F.interpolate(odd, size=(266, 400), mode="area")
    in_odd, in_shrunk = detect(model, odd, DetectionConf(500, max_image_size=400)), detect(model, shrunk, conf)
    assert torch.allclose(in_odd["xy"], (in_shrunk["xy"] + 0.5) * torch.tensor([500 / 400, 333 / 266]) - 0.5)


def test_a_peak_at_the_top_of_an_octave_yields_to_a_stronger_one_in_the_next_octave():
    octaves = [torch.full((1, 3, 32 // 2**o, 48 // 2**o), -5.0) for o in range(2)]
    octaves[0][0, 2, 10, 20] = 2.0  # top level of octave 0 at input pixel (41.5, 21.5) ...
    octaves[1][0, 0, 4:7, 9:12] = 2.5  # ... and its scale neighbour, level 0 of octave 1, peaks at the same spot
    octaves[1][0, 0, 5, 10] = 3.0
    found = detect(FixedScaleSpace(octaves), torch.zeros(1, 1, 64, 96), DetectionConf(max_keypoints=10))
    assert len(found["xy"]) == 1
    assert torch.allclose(found["xy"][0], torch.tensor([10 * 4 + 1.5, 5 * 4 + 1.5]))
    # Its sub-level offset leans towards the weaker neighbour below (octave 0, level 2).
    assert DetectorConf().sigma0 * 2 ** (2 / 3) < found["sigma"][0] < DetectorConf().sigma0 * 2


def test_soft_argmax_finds_the_sub_cell_position_of_a_symmetric_peak():
    # A peak half-way between cells (1, 1) and (2, 1): equal logits there, falling off around.
    window = torch.tensor([[-4.0, -4.0, -4.0], [-4.0, 2.0, 2.0], [-4.0, -4.0, -4.0]])
    offset = soft_argmax_offset(window[None], torch.tensor(5.0))[0]
    assert torch.allclose(offset, torch.tensor([0.5, 0.0]), atol=1e-3)


def test_spread_top_k_leaves_no_cell_empty():
    strong = torch.stack([torch.rand(500) * 50, torch.rand(500) * 50], dim=1)  # top-left cell, high scores
    medium = torch.stack([torch.rand(20) * 50 + 50, torch.rand(20) * 50], dim=1)  # the cell to its right
    weak = torch.tensor([[150.0, 150.0], [180.0, 20.0]])
    xy = torch.cat([strong, medium, weak])
    score = torch.cat([torch.rand(500) + 2, torch.rand(20) + 1, torch.tensor([0.1, 0.2])])
    kept_strong = {}
    for share in (1.0, 0.25):
        keep = spread_top_k(xy, score, (200, 200), k=64, cells=4, share=share)
        assert len(keep) == 64 and {520, 521} <= set(keep.tolist()), share  # the weak cells are never empty
        assert torch.all(score[keep][:-1] >= score[keep][1:]), share
        kept_strong[share] = int((keep < 500).sum())
    # The whole budget divided over the 16 cells: 4 places each, so the medium cell keeps 4 of its 20,
    # the weak ones their 2 and the strong cell the other 58. A quarter of it: 1 place each, 61 strong.
    assert kept_strong == {1.0: 58, 0.25: 61}


def test_orientation_follows_the_image_rotation():
    rows, cols = np.mgrid[0:101, 0:101].astype(np.float32)
    ramp = np.clip(50 + 3 * (cols - 50), 0, 255)  # brightness grows to the right: gradient along +x
    blob = np.exp(-((cols - 50) ** 2 + (rows - 50) ** 2) / (2 * 15**2))
    image = (ramp * blob + 30).astype(np.uint8)
    xy, sigma = np.array([[50.5, 50.5]], np.float32), np.array([3.0], np.float32)
    angle = dominant_orientation(image, xy, sigma)[0]
    turned = dominant_orientation(np.ascontiguousarray(np.rot90(image, k=-1)), xy, sigma)[0]  # clockwise on screen
    assert abs(angle) < 0.1
    assert abs(turned - math.pi / 2) < 0.1  # +x rotates to +y (down) in image coordinates
    assert np.isnan(keypoint_orientations(image, xy, sigma)[1]).all()  # one direction: no second orientation


def test_a_corner_gets_a_second_orientation_along_its_other_edge():
    image = np.full((101, 101), 50, np.uint8)
    image[50:, 50:] = 200  # a bright quadrant: its edges' gradients point along +x and +y from the corner
    xy, sigma = np.array([[50.0, 50.0]], np.float32), np.array([3.0], np.float32)
    first, second = keypoint_orientations(image, xy, sigma)
    assert sorted([first[0], second[0]]) == pytest.approx([0, math.pi / 2], abs=0.15)
    flat = np.full((101, 101), 50, np.uint8)
    assert np.isnan(keypoint_orientations(flat, xy, sigma)[1]).all()


# Frames (log2 scale, orientation) of keypoints that do not change between the images.
SAME_FRAMES = torch.zeros(3, 2)


def test_candidates_carry_mutuality_and_ratios():
    desc0 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]]), dim=1)
    desc1 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    candidates = propose_candidates(desc0, desc1, SAME_FRAMES[:2], SAME_FRAMES[:2])
    assert candidates.index1.tolist() == [0, 0]
    mutual = candidates.features[:, -1]
    assert mutual.tolist() == [1.0, 0.0]
    ratio1 = candidates.features[:, -2]
    assert ratio1[0] < 1 < ratio1[1]  # keypoint 1 of image 0 loses its candidate to keypoint 0


def test_both_ways_adds_the_proposals_of_image_1_that_image_0_did_not_make():
    desc0 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.1]]), dim=1)
    desc1 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.8, 0.6], [0.0, 0.6, 0.8]]), dim=1)
    one_way = propose_candidates(desc0, desc1, SAME_FRAMES[:2], SAME_FRAMES)
    both = propose_candidates(desc0, desc1, SAME_FRAMES[:2], SAME_FRAMES, both_ways=True)
    assert list(zip(one_way.index0.tolist(), one_way.index1.tolist())) == [(0, 0), (1, 1)]
    # Keypoint 2 of image 1 proposes keypoint 1 of image 0, whose own choice is keypoint 1: a new, non-mutual pair.
    assert list(zip(both.index0.tolist(), both.index1.tolist())) == [(0, 0), (1, 1), (1, 2)]
    assert both.features[:, -1].tolist() == [1.0, 1.0, 0.0]
    assert both.features.shape == (3, 3 + 3 + 6)


def test_candidates_off_the_pairs_scale_change_and_rotation_are_flagged():
    # Four mutual candidates (identity descriptors): three agree on "twice as large, turned by 75 degrees".
    desc = torch.eye(4)
    scales0, angles0 = torch.tensor([1.0, 2.0, 4.0, 2.0]), torch.tensor([0.0, 1.0, -2.0, 0.5])
    scales1 = torch.tensor([2.0, 4.0, 8.0, 16.0])
    angles1 = angles0 + torch.tensor([1.0, 1.0, 1.0, -1.0]) * math.radians(75)
    candidates = propose_candidates(desc, desc, keypoint_frames(scales0, angles0), keypoint_frames(scales1, angles1))
    scale_deviation, rotation_deviation, upright = candidates.features[:, 4:7].T
    assert scale_deviation.tolist() == pytest.approx([0, 0, 0, 2])  # octaves
    assert rotation_deviation[:3].max() < 0.03 and rotation_deviation[3] > 0.8  # in units of pi
    assert upright.tolist() == [0, 0, 0, 0]
    zero = torch.zeros(4)
    assert propose_candidates(desc, desc, keypoint_frames(scales0, zero), keypoint_frames(scales1, zero)).features[
        :, 6
    ].tolist() == [1, 1, 1, 1]


def test_localisation_terms_reward_a_sharp_peak_on_the_positive_cell():
    model = MskDetector(DetectorConf(num_octaves=1))
    xy = torch.tensor([[20 * 2 + 0.5, 10 * 2 + 0.5]])  # centre of cell (row 10, col 20) of octave 0 (stride 2)
    index, batch = torch.tensor([1.0]), torch.tensor([0])
    flat = [torch.zeros(1, 3, 32, 48)]
    peaked = [torch.zeros(1, 3, 32, 48)]
    peaked[0][0, 1, 10, 20] = 10.0
    offset_flat, peak_flat = localisation_terms(model, flat, xy, index, batch)
    offset_peaked, peak_peaked = localisation_terms(model, peaked, xy, index, batch)
    assert math.isclose(peak_flat.item(), math.log(25), rel_tol=1e-5)  # uniform over the 5x5 window
    assert peak_peaked.item() < 0.01
    assert offset_flat.item() < 1e-6 and offset_peaked.item() < 1e-6  # both symmetric about the cell centre
    shifted = xy + torch.tensor([[1.0, 0.0]])  # half a cell to the right: the peak must lean right
    assert localisation_terms(model, peaked, shifted, index, batch)[0].item() > 0.4


def test_image_1_proposals_are_judged_against_the_same_consensus_as_image_0s():
    # Mutual pairs (0, 0) and (1, 1) change scale by 0 and 2 octaves; keypoint 2 of image 1 proposes
    # keypoint 1 of image 0 (a new pair) at an unchanged scale.
    desc0 = torch.eye(3)[:2]
    desc1 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.6]]), dim=1)
    zero = torch.zeros(3)
    frames0 = keypoint_frames(torch.tensor([1.0, 1.0]), zero[:2] + 0.1)
    frames1 = keypoint_frames(torch.tensor([1.0, 4.0, 1.0]), zero + 0.1)
    both = propose_candidates(desc0, desc1, frames0, frames1, both_ways=True)
    assert list(zip(both.index0.tolist(), both.index1.tolist())) == [(0, 0), (1, 1), (1, 2)]
    forward_consensus = both.features[0, 3]  # candidate (0, 0) has no scale change: its deviation is the consensus
    assert both.features[2, 3] == pytest.approx(forward_consensus.item())  # mirrored, not re-read from image 1's side


def test_neighbourhood_max_is_a_3d_max_pool_over_the_inner_levels():
    stack = torch.randn(5, 37, 53, generator=torch.Generator().manual_seed(0))
    stack[0] = -math.inf  # a missing scale neighbour, as scale_neighbourhood leaves it
    pooled = F.max_pool3d(stack[None, None], 3, stride=1, padding=1)[0, 0]
    assert torch.equal(neighbourhood_max(stack), pooled[1:-1])
