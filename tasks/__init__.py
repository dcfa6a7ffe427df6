"""Recipes: the three uses people have (timm fine-tuning, medical segmentation, handwriting)."""
