"""Tensor operators written here because torchvision's are slow or missing on the CPU or in export; each is tested
for equality against torchvision's own operator."""
