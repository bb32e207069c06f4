"""Export of the whole C4 detector (ONNX), its runtimes (ONNX Runtime, OpenVINO, int8) and the options policy that
says what every backend does with every test-time option."""
