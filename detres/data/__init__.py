"""Dataset readers (COCO json, VOC xml, ImageNet), image I/O, transforms and loaders."""
