"""ImageNet localization (App. C): per-class RPN and RoI-centric R-CNN."""
