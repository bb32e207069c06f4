"""Benchmarking: a torchvision FasterRCNN peer built from detres's weights, timing, memory and FLOP counting."""
