"""Sketch data: stroke formats, dataset sources, the data module, augmentations and model batching."""
