"""Segmentation data on the user's own files (one import for both): 2D image/mask folders
(:mod:`mmix_applied.data.segmentation_2d`) and 3D NIfTI datalists (:mod:`mmix_applied.data.segmentation_3d`)."""

from mmix_applied.data.constants import IMAGE_SUFFIXES, NIFTI_SUFFIXES, SEGMENTATION_MODES
from mmix_applied.data.masks import MaskMode, check_mask_values
from mmix_applied.data.segmentation_2d import (
    NamedSlices,
    SegmentationFolder,
    build_2d_transforms,
    find_pairs,
    read_image,
    read_mask,
)
from mmix_applied.data.segmentation_3d import VolumeDataset, build_3d_transforms, load_datalist, nifti_predict_items

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "SEGMENTATION_MODES",
    "MaskMode",
    "NamedSlices",
    "SegmentationFolder",
    "VolumeDataset",
    "build_2d_transforms",
    "build_3d_transforms",
    "check_mask_values",
    "find_pairs",
    "load_datalist",
    "nifti_predict_items",
    "read_image",
    "read_mask",
]
