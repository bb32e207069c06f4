"""Nothing phones home: OpenVINO's conversion tools and NNCF send usage statistics unless told not to.

The OpenVINO runtime (`openvino.Core`) sends nothing; its Python conversion tools (`openvino.convert_model`,
`ovc`) and NNCF do, through the openvino-telemetry package, whenever no opt-out consent file exists
(~/intel/openvino_telemetry), and `opt_in_out --opt_out` would itself send one opt-out event. So detres never
calls convert_model (the runtime reads the ONNX file with `Core.read_model`) and sets NNCF's switch NNCF_CI
before NNCF is imported, which makes NNCF use a stub that sends nothing (nncf/telemetry/wrapper.py).
tests/test_deploy_checks.py checks that running the OpenVINO runtime opens no socket.
"""

from __future__ import annotations

import os


def disable_telemetry() -> None:
    """Call before importing nncf; safe to call many times."""
    os.environ.setdefault("NNCF_CI", "1")
