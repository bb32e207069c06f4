"""The ResNet family and the Faster R-CNN C4 detector, one concern per file."""
