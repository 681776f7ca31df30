"""MSK: learned multi-scale keypoints, triplet descriptors and match decisions trained from SfM."""
