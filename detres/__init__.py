"""detres: Faster R-CNN on ResNet C4 and the ResNet paper's detection and localization systems."""

__version__ = "0.1.0"
