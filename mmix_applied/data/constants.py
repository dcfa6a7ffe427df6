"""Constants shared by the data layer and the recipes: file suffixes and segmentation modes."""

from __future__ import annotations

from mmix_applied.adapters.segmentation import SEG_MODES

__all__ = ["IMAGE_SUFFIXES", "NIFTI_SUFFIXES", "SEGMENTATION_MODES"]

#: Image files OpenCV reads (case-insensitive), for classification folders, masks and text lines.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: NIfTI volumes.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Segmentation modes, as the Segmentation adapter defines them.
SEGMENTATION_MODES: tuple[str, ...] = tuple(SEG_MODES)
