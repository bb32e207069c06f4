"""Metrics: COCO, VOC, ImageNet DET, localization and classification; metrics files."""
