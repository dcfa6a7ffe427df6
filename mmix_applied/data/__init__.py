"""Data sets and readers (layer "data", below the engine; see docs/architecture.md).

``images`` (classification folders, CSVs, arrays), ``mnist`` (the embedded digits),
``segmentation_2d`` / ``segmentation_3d`` (image/mask folders, NIfTI datalists; both re-exported
by ``segmentation``), ``brain`` (the embedded MNI152 tissue default), ``line_readers`` /
``text_lines`` (IAM and TSV lists; line images), ``digit_strings`` (embedded digit lines),
``seeding`` (the one augmentation-seeding rule) and ``constants``.
"""
