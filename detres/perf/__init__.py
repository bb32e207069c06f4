"""Benchmarking: a torchvision FasterRCNN peer built from detres's weights, timing and FLOP counting."""
