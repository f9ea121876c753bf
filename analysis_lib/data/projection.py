"""3D voxels → the three 2D projections of the public sample (xy, yz, zx)."""

import numpy as np

#: (kept axes, name) of each projection, in projection-id order.
PROJECTIONS = (((0, 1), "xy"), ((1, 2), "yz"), ((2, 0), "zx"))


def project(
    coords: np.ndarray, columns: dict[str, np.ndarray], axes: tuple[int, int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Project 3D voxels on the plane of ``axes``.

    Parameters
    ----------
    coords : (N, 3) int64
    columns : dict of (N,) arrays
        ``energy`` is summed per pixel and ``label`` takes the minimum (the priority rule of the
        3D labels); every other column takes the value of the pixel's most energetic voxel.
    axes : the two kept axes, in output order

    Returns
    -------
    coords2 : (M, 2) int64, sorted by flat pixel index
    columns2 : dict of (M,) arrays
    """
    size = int(coords.max()) + 1 if len(coords) else 1
    flat = coords[:, axes[0]] * size + coords[:, axes[1]]
    uniq, inv = np.unique(flat, return_inverse=True)
    out = {"energy": np.bincount(inv, weights=columns["energy"]).astype(np.float32)}
    label = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(label, inv, columns["label"])
    out["label"] = label
    order = np.lexsort((-columns["energy"], inv))
    largest = order[np.r_[True, inv[order][1:] != inv[order][:-1]]] if len(order) else order
    for name, values in columns.items():
        if name not in out:
            out[name] = values[largest]
    return np.stack(np.divmod(uniq, size), axis=1).astype(np.int64), out
