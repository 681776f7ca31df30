"""A PNG to check a training set by eye: random tracks (one 3D point per row, its patches from
different views) and random detector samples of each kind (one kind per row)."""

from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .targets import EMPTY, TRACKED, UNTRACKED  # noqa: E402

_GAP = 2  # pixels between patches
_KIND_NAMES = {
    TRACKED: "positive: tracked",
    UNTRACKED: "negative: untracked detection",
    EMPTY: "negative: no detection",
}


def _mosaic(rows: list[np.ndarray], columns: int, ps: int) -> np.ndarray:
    """Tile rows of (n_i, PS, PS) patches into one grey image; empty cells are white."""
    cell = ps + _GAP
    out = np.full((len(rows) * cell, columns * cell), 255, np.uint8)
    for r, patches in enumerate(rows):
        for c, patch in enumerate(patches[:columns]):
            out[r * cell : r * cell + ps, c * cell : c * cell + ps] = patch
    return out


def _sample_tracks(scenes: list[h5py.Group], num: int, rng: np.random.Generator) -> list[tuple[h5py.Group, int]]:
    """`num` random (scene, track), preferring tracks seen from 3+ views, which show more."""
    candidates = []
    for scene in scenes:
        views = np.diff(scene["tracks/track_offsets"][:])
        for min_views in (3, 2):
            tracks = np.flatnonzero(views >= min_views)
            if len(tracks):
                candidates += [(scene, int(t), min_views) for t in tracks]
                break
    best = max((m for _, _, m in candidates), default=2)
    candidates = [(s, t) for s, t, m in candidates if m == best]
    picks = rng.choice(len(candidates), min(num, len(candidates)), replace=False)
    return [candidates[i] for i in picks]


def show_dataset(
    path: Path, output: Path, split: str = "all", num_tracks: int = 12, max_views: int = 8, seed: int = 0
) -> None:
    """Write the look-check PNG of the dataset at `path` to `output`; `split` is train, val or all."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r") as f:
        scenes = [g for g in f["scenes"].values() if split in ("all", g.attrs["split"])]
        if not scenes:
            raise ValueError(f"{path} has no {split} scenes")
        ps = scenes[0]["tracks/patches"].shape[-1]

        track_rows, track_labels = [], []
        for scene, t in _sample_tracks(scenes, num_tracks, rng):
            start, end = scene["tracks/track_offsets"][t : t + 2]
            track_rows.append(scene["tracks/patches"][start : min(end, start + max_views)])
            point = scene["tracks/point3D_id"][start]
            what = f"point {point}" if point >= 0 else "verified match"  # a pair has no 3D points
            track_labels.append(f"{scene.name.split('/')[-1]} {what} ({end - start} views)")

        det_rows, det_labels = [], []
        for kind, name in _KIND_NAMES.items():
            patches = []
            for s in rng.integers(len(scenes), size=max_views):
                scene = scenes[s]
                idx = np.flatnonzero(scene["detector/kind"][:] == kind)
                if len(idx):
                    patches.append(scene["detector/patches"][rng.choice(idx)])
            det_rows.append(np.array(patches).reshape(-1, ps, ps))
            det_labels.append(name)

    cell = ps + _GAP
    fig, axes = plt.subplots(
        2,
        1,
        figsize=(2.5 + 0.8 * max_views, 0.8 * (len(track_rows) + len(det_rows)) + 1.5),
        gridspec_kw={"height_ratios": [max(len(track_rows), 1), len(det_rows)]},
    )
    for ax, rows, labels, title in (
        (axes[0], track_rows, track_labels, "tracks: one 3D point per row, its patches in different views"),
        (axes[1], det_rows, det_labels, "detector samples (upright, at the keypoint's scale)"),
    ):
        ax.imshow(_mosaic(rows, max_views, ps), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_yticks([r * cell + ps / 2 for r in range(len(rows))], labels, fontsize=7)
        ax.set_xticks([])
        ax.set_title(title, fontsize=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)
