"""Export of the whole C4 detector (ONNX, torch.export) and its runtimes (ONNX Runtime, OpenVINO, int8)."""
