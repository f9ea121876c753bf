"""The study's published numbers (Dominé & Terao, Phys. Rev. D 102, 012005, 2020), in one place.

The chapters print them beside ours and the findings page tests its claims against them; nothing
else in the package states one of these numbers.
"""

from analysis_lib.core.labels import CLASS_NAMES

#: Table I: class fractions of nonzero voxels in the public sample, in class order.
CLASS_FRACTIONS = (0.17, 0.34, 0.47, 0.01, 0.01)
#: The mean occupancy of the public sample: the fraction of voxels that are nonzero.
OCCUPANCY = 1e-4

#: Row names of the classwise tables (Tables IV and V): the five classes, then all voxels.
CLASSWISE_ROWS = (*CLASS_NAMES, "overall")

#: Table II [3D, 5-16]: columns "backend · size · batch", rows as in the chapter.
#: The table's batch-size row reads "4 | 4 | 64" over five columns; we read the 64 as spanning
#: the three sparse columns of 192, 512 and 768 px. Its own numbers say so: from 192 to 512
#: and 768 px the sparse training memory grows 3.9× and 7.2× and the step time 4.2× and 7.3×,
#: as the voxels per event grow, whereas a batch of 4 at 512 px would make one 512 px event
#: cost 66× the time of a 192 px one. (The study's text calls 192 px, batch 4 the setting of
#: equal batch sizes, and trains its larger images "with a dramatically larger batch size".)
TABLE2_ROWS = ("nonzero accuracy mean", "nonzero accuracy std", "GPU memory test (GB)",
               "GPU memory train (GB)", "GPU wall time test (s)", "GPU wall time train (s)",
               "CPU duration test (s)", "CPU duration train (s)")
TABLE2 = {
    "dense · 192 px · batch 4": (0.92, 0.096, 16, 26 * 4, 3.3, 25, None, None),
    "sparse · 192 px · batch 4": (0.94, 0.088, 0.044, 0.21, 0.10, 0.21, 0.25, 1.1),
    "sparse · 192 px · batch 64": (0.98, 0.049, 0.19, 1.3, 0.66, 1.2, 1.7, 6.1),
    "sparse · 512 px · batch 64": (0.99, 0.014, 0.67, 5.1, 2.4, 5.0, 8.0, 24),
    "sparse · 768 px · batch 64": (0.99, 0.0037, 1.3, 9.3, 4.4, 8.8, 16, 47),
}

#: The abstract's dense/sparse inference ratios (memory, wall time) on a GPU.
RATIOS_3D = (364, 33)
RATIOS_2D = (93, 3.1)

#: Table III [3D, 512 px]: nonzero accuracy by depth, then by filters.
TABLE3 = {
    6: {8: 0.9894, 16: 0.9916, 32: 0.9923},
    5: {8: 0.9886, 16: 0.9907, 32: 0.9906},
    4: {8: 0.9874, 16: 0.9900, 32: 0.9907},
}
#: Figures 10-11: wall time grows about this much from 8 to 32 filters (GPU).
WALL_TIME_GROWTH_8_TO_32 = 0.10

#: Table IV [3D, 5-16]: (test size, train size) -> classwise accuracies and overall.
TABLE4 = {
    (192, 192): (0.960, 0.962, 0.976, 0.743, 0.365, 0.980),
    (192, 512): (0.956, 0.954, 0.969, 0.896, 0.426, 0.981),
    (192, 768): (0.937, 0.994, 0.966, 0.901, 0.439, 0.977),
    (768, 192): (0.988, 0.997, 0.995, 0.767, 0.626, 0.989),
    (768, 512): (0.990, 0.966, 0.996, 0.751, 0.700, 0.992),
    (768, 768): (0.989, 0.996, 0.997, 0.859, 0.704, 0.993),
}

#: Table V [3D, 512 px, 5-32]: (train data / test data) -> classwise accuracies and overall.
TABLE5 = {
    "train regular / test regular": (0.980, 0.994, 0.994, 0.857, 0.566, 0.992),
    "train regular / test relabeled": (0.981, 0.992, 0.979, 0.948, 0.944, 0.992),
    "train relabeled / test relabeled": (0.981, 0.994, 0.992, 0.960, 0.947, 0.996),
    "train relabeled + weights / test relabeled": (0.993, 0.981, 0.992, 0.972, 0.957, 0.991),
}

#: Table VI: Michel reconstruction, (no cut, >= 10 voxels).
TABLE6 = {
    "sample size": (6998, 6961),
    "ID purity": (0.967, 0.973),
    "ID efficiency": (0.939, 0.934),
    "cluster efficiency": (0.954, 0.960),
    "cluster purity": (0.955, 0.960),
}
#: Share of matched candidates with cluster efficiency and purity both above 95 %.
BOTH_ABOVE_95 = 0.898

#: Figure 2 and the learning curves: the study's best sparse accuracy at 192 px (batch 64).
SPARSE_192_BATCH64_ACCURACY = TABLE2["sparse · 192 px · batch 64"][0]

#: Figure 13 shows the worst images: the 0.05 % of lowest nonzero accuracy.
WORST_IMAGES_FRACTION = 0.0005
