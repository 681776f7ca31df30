"""Metrics and comparisons of reconstructions and matches against ground truth."""
