"""Figure styles of the book: event displays in the study's class colours, provenance stamps."""

from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, LogNorm

from analysis_lib.core.files import file_sha256, git_commit
from analysis_lib.core.labels import CLASS_NAMES, NUM_CLASSES

#: Label colours of the study's figures: HIP blue, MIP cyan, shower green, delta yellow,
#: Michel orange.
CLASS_COLORS = ("#1f3fbf", "#17c5d6", "#2ca02c", "#f2d600", "#ff7f0e")

LABEL_CMAP = ListedColormap(CLASS_COLORS, name="voxel_classes")


def use_book_style() -> None:
    """Matplotlib defaults shared by every figure of the book."""
    mpl.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "font.size": 10,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
    })


def provenance(profile: str, data: dict[str, str | Path] | None = None, config_hash: str = ""
               ) -> str:
    """One line naming the commit, profile, data hashes and config hash behind a result."""
    parts = [f"commit {git_commit()}", f"profile {profile}"]
    for name, path in (data or {}).items():
        parts.append(f"{name} sha256 {file_sha256(path)[:12]}")
    if config_hash:
        parts.append(f"config {config_hash}")
    return " · ".join(parts)


def stamp(fig: plt.Figure, text: str) -> None:
    """Write a provenance line in small grey type below a figure's axes."""
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.995, 0.005, text, ha="right", va="bottom", fontsize=6, color="0.5")


def _label_legend(ax: plt.Axes) -> None:
    handles = [mpl.patches.Patch(color=CLASS_COLORS[c], label=CLASS_NAMES[c])
               for c in range(NUM_CLASSES)]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=1)


def event_display_3d(ax: plt.Axes, coords: np.ndarray, values: np.ndarray, size: int,
                     labels: bool = False, marker_size: float = 0.6) -> None:
    """Scatter an event's voxels on 3D axes, coloured by energy (log scale) or by class."""
    if labels:
        ax.scatter(*coords.T, c=np.asarray(values), cmap=LABEL_CMAP, vmin=-0.5,
                   vmax=NUM_CLASSES - 0.5, s=marker_size, depthshade=False)
        _label_legend(ax)
    else:
        sc = ax.scatter(*coords.T, c=np.maximum(values, 1e-3), cmap="inferno_r",
                        norm=LogNorm(), s=marker_size, depthshade=False)
        plt.colorbar(sc, ax=ax, shrink=0.6, pad=0.12, label="energy per voxel (MeV)")
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(0, size)
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)")
    ax.set_zlabel("z (voxels)")


def event_display_2d(ax: plt.Axes, coords: np.ndarray, values: np.ndarray, size: int,
                     labels: bool = False, axis_names: tuple[str, str] = ("x", "y")) -> None:
    """Draw a 2D image of an event's pixels, coloured by energy (log scale) or by class."""
    image = np.full((size, size), np.nan)
    image[coords[:, 0], coords[:, 1]] = values
    if labels:
        ax.imshow(image.T, origin="lower", cmap=LABEL_CMAP, vmin=-0.5, vmax=NUM_CLASSES - 0.5,
                  interpolation="nearest")
        _label_legend(ax)
    else:
        im = ax.imshow(np.maximum(image, 1e-3).T, origin="lower", cmap="inferno_r", norm=LogNorm(),
                       interpolation="nearest")
        plt.colorbar(im, ax=ax, shrink=0.8, label="energy per pixel (MeV)")
    ax.set_xlabel(f"{axis_names[0]} (pixels)")
    ax.set_ylabel(f"{axis_names[1]} (pixels)")
    ax.grid(False)
