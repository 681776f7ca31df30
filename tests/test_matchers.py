"""Nearest-neighbour matching recovers known correspondences and rejects ambiguous ones."""

import numpy as np
import pytest
import torch
from test_database import random_features

from colmap_plugin.matchers import (
    ROW_BLOCK,
    SHORTLIST_MIN_KEYPOINTS,
    create_matcher,
    descriptors_to_tensor,
    nearest_both_ways,
    nearest_neighbour_match,
)


def test_mutual_nearest_neighbours_recover_a_permutation():
    rng = np.random.default_rng(0)
    desc0 = rng.standard_normal((200, 32)).astype(np.float32)
    permutation = rng.permutation(200)
    desc1 = desc0[permutation] + 0.01 * rng.standard_normal((200, 32)).astype(np.float32)
    matches, scores = nearest_neighbour_match(descriptors_to_tensor(desc0), descriptors_to_tensor(desc1))
    assert len(matches) == 200
    assert np.array_equal(permutation[matches[:, 1]], matches[:, 0])
    assert np.all(scores > 0.99)


def test_ratio_test_drops_ambiguous_matches():
    desc0 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=1)
    # Row 0 has two near-identical candidates in image 1; row 1 has one clear match.
    desc1 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05, 0.0], [1.0, 0.0, 0.05], [0.0, 1.0, 0.0]]), dim=1)
    plain, _ = nearest_neighbour_match(desc0, desc1)
    ratio, _ = nearest_neighbour_match(desc0, desc1, ratio_threshold=0.8)
    assert len(plain) == 2
    assert ratio.tolist() == [[1, 2]]


def test_empty_and_single_keypoint_images():
    one = descriptors_to_tensor(np.ones((1, 8), np.float32))
    none = descriptors_to_tensor(np.zeros((0, 8), np.float32))
    assert nearest_neighbour_match(one, none)[0].shape == (0, 2)
    assert nearest_neighbour_match(one, one, ratio_threshold=0.8)[0].tolist() == [[0, 0]]


def test_matchers_accept_sift_descriptors():
    features = random_features(30, np.uint8)
    for name in ("mnn", "ratio"):
        matches, _ = create_matcher(name).match(features, features)
        assert np.array_equal(matches[:, 0], matches[:, 1]) and len(matches) == 30


def test_the_exact_search_in_blocks_of_rows_finds_what_one_whole_product_finds():
    generator = torch.Generator().manual_seed(0)
    desc0, desc1 = (  # several blocks, the last one partial, formed in one reused buffer
        torch.nn.functional.normalize(torch.randn(n, 32, generator=generator), dim=1) for n in (3 * ROW_BLOCK + 5, 700)
    )
    similarity = desc0 @ desc1.T
    for (values, indices), expected in zip(nearest_both_ways(desc0, desc1), (similarity, similarity.T)):
        best = expected.topk(2, dim=1)
        assert torch.equal(indices, best.indices)
        assert torch.allclose(values, best.values, atol=1e-6)


# Share of keypoints whose two nearest neighbours must be the exact search's, and how far its scores may be:
# float32 shortlists hold both, and only a near tie's rounding (about 1e-7) can swap them.
SHORTLIST_AGREEMENT = {"float32": (0.9995, 1e-6), "bfloat16": (0.99, 0.01)}


@pytest.mark.parametrize("search", SHORTLIST_AGREEMENT)
def test_shortlist_searches_find_the_exact_nearest_neighbours_both_ways_with_float32_similarities(search):
    generator = torch.Generator().manual_seed(0)
    desc0, desc1 = (  # neither a multiple of the group size: padding must never be chosen
        torch.nn.functional.normalize(torch.randn(n, 64, generator=generator), dim=1)
        for n in (SHORTLIST_MIN_KEYPOINTS + 3, SHORTLIST_MIN_KEYPOINTS + 101)
    )
    same_two, score_tolerance = SHORTLIST_AGREEMENT[search]
    exact = nearest_both_ways(desc0, desc1)
    fast = nearest_both_ways(desc0, desc1, search)
    for (exact_similarity, exact_index), (similarity, index), (query, other) in zip(
        exact, fast, [(desc0, desc1), (desc1, desc0)]
    ):
        assert index.shape == (len(query), 2) and (index[:, 0] != index[:, 1]).all()
        assert (index[:, 0] == exact_index[:, 0]).float().mean() > 0.999
        assert (index == exact_index).all(dim=1).float().mean() >= same_two  # the second neighbour feeds the matcher
        # Whatever was shortlisted is scored in float32, in order.
        assert torch.allclose(similarity, (query[:, None] * other[index]).sum(dim=-1), atol=1e-6)
        assert (similarity[:, 0] >= similarity[:, 1]).all()
        assert (similarity - exact_similarity).abs().max() < score_tolerance


def test_an_unknown_search_is_refused():
    with pytest.raises(ValueError, match="search must be one of exact, float32, bfloat16"):
        nearest_both_ways(torch.eye(3), torch.eye(3), "float16")


@pytest.mark.parametrize("search", SHORTLIST_AGREEMENT)
def test_padding_never_displaces_neighbours_less_similar_than_none(search):
    """Sides are padded to whole groups with zero rows, which score 0: true neighbours scoring below that stay."""
    generator = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.one_hot(torch.tensor(0), 64).float()
    desc0 = torch.nn.functional.normalize(
        axis + 0.05 * torch.randn(SHORTLIST_MIN_KEYPOINTS + 1, 64, generator=generator)
    )
    # One keypoint of image 1 like all of image 0's, the others opposite: every second neighbour scores below 0.
    desc1 = torch.nn.functional.normalize(
        -axis + 0.3 * torch.randn(SHORTLIST_MIN_KEYPOINTS + 5, 64, generator=generator)
    )
    desc1[0] = axis
    same_two, _ = SHORTLIST_AGREEMENT[search]
    for (_, exact_index), (_, index) in zip(nearest_both_ways(desc0, desc1), nearest_both_ways(desc0, desc1, search)):
        assert (index == exact_index).all(dim=1).float().mean() >= same_two
