"""The ways an int8 export may be made, in the order `detres export --int8` tries them (docs/deploy.md).

A recipe is a quantizer (detres.deploy.quantize) and how it is run. With annotated images to measure on
(detres.deploy.int8_data), the export tries the recipes of deploy.int8_quantizer in order and keeps the first
whose mAP kept the bound (detres.deploy.int8_search); without, it runs the first. With `auto` (and OpenVINO,
which runs both tools' models) both ladders are tried, NNCF's first, accuracy control last. Each ladder goes from
cheap to expensive:

1. the quantizer as is (every convolution and matrix product in int8);
2. the output layers in float: the RPN's objectness and box-delta convolutions and the head's class-score and
   box-delta layers, whose values go straight into the scores and boxes (NNCF's ignored scope, ONNX Runtime's
   nodes_to_exclude); they are about 1% of the compute of a C4 detector;
3. (NNCF) int8 where and as ONNX Runtime puts it: only at the inputs of convolutions and matrix products (NNCF as
   is also quantizes the inputs of residual adds, pooling and GroupNorm), with activation ranges from the
   calibration images' min and max (NNCF's default averages each image's). On the trained GroupNorm R-50, NNCF as
   is lost 6.4 mAP@[.5,.95] (boxes, not detections) and this recipe kept the bound on val (docs/deploy.md);
4. NNCF's accuracy control (nncf.quantize_with_accuracy_control): it ranks the quantized layers by how much each
   costs on the export's measurement images, and reverts them to float one group at a time until the loss is
   within the bound (mixed precision), at most MAX_REVERTS groups. Its metric is the worse of the mAP@.5 and
   mAP@[.5,.95] losses against fp32, each as a share of its bound, so it restores whichever the int8 model broke.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from detres.deploy.quantize import QUANTIZERS, QuantizeOptions, resolve_quantizer

# the leaf modules whose outputs are the detector's scores and box deltas (detres.modeling.rpn.RPNHead,
# detres.modeling.roi_heads.BoxPredictor)
OUTPUT_MODULES = ("cls_logits", "cls_score", "bbox_pred")
MAX_REVERTS = 6  # accuracy control: layer groups reverted to float at most (each costs a pass over the images)
RANKING_IMAGES = 8  # accuracy control: measurement images each layer group is ranked on


@dataclass(frozen=True)
class Recipe:
    """One way to make the int8 model: a quantizer, with its output layers in float and/or accuracy control."""

    quantizer: str
    outputs_float: bool = False
    as_onnxruntime: bool = False
    accuracy_control: bool = False

    @property
    def name(self) -> str:
        parts = [self.quantizer, *(["output layers float"] if self.outputs_float else []),
                 *(["as onnxruntime (conv/matmul inputs, min-max ranges)"] if self.as_onnxruntime else []),
                 *(["accuracy control"] if self.accuracy_control else [])]
        return ", ".join(parts)

    def settings(self) -> dict:
        """What the export json records: the quantizer's fixed settings and this recipe's."""
        out = dict(QUANTIZERS[self.quantizer].settings)
        if self.outputs_float:
            out["float_layers"] = f"the output layers ({', '.join(OUTPUT_MODULES)})"
        if self.as_onnxruntime:
            out["int8_ops_only"] = "int8 only at the inputs of convolutions and matrix products (ignored_scope types)"
            out["activation_ranges"] = "MINMAX (the calibration images' min and max, as ONNX Runtime's MinMax)"
        if self.accuracy_control:
            out["accuracy_control"] = {"tool": "nncf.quantize_with_accuracy_control",
                                       "metric": "worst loss of mAP@.5 and mAP@[.5,.95], as a share of its bound",
                                       "max_reverts": MAX_REVERTS, "ranking_images": RANKING_IMAGES}
        return out

    def options(self, onnx_path: Path, metric: Callable[[Callable, Sequence[int]], float] | None,
                max_drop: float, validation: Sequence[Tensor] = ()) -> QuantizeOptions:
        """The quantizer's options for this recipe (metric, max_drop and validation: accuracy control's, the
        metric scoring the validation images of the indices it is given)."""
        layers = output_layers(onnx_path) if self.outputs_float else ()
        if not self.accuracy_control:
            return QuantizeOptions(float_layers=layers, int8_ops_only=self.as_onnxruntime,
                                   minmax_ranges=self.as_onnxruntime)
        return QuantizeOptions(float_layers=layers, int8_ops_only=self.as_onnxruntime,
                               minmax_ranges=self.as_onnxruntime, metric=metric,
                               max_drop=max_drop, max_iterations=MAX_REVERTS,
                               ranking_images=min(RANKING_IMAGES, len(validation)),
                               validation_images=tuple(validation))


LADDERS: dict[str, list[Recipe]] = {
    "nncf": [Recipe("nncf"), Recipe("nncf", outputs_float=True), Recipe("nncf", as_onnxruntime=True),
             Recipe("nncf", accuracy_control=True)],
    "onnxruntime": [Recipe("onnxruntime"), Recipe("onnxruntime", outputs_float=True)],
}


# deploy.int8_quantizer=auto for OpenVINO (which runs both tools' models): both ladders, the expensive step last
AUTO_LADDER = [*LADDERS["nncf"][:3], *LADDERS["onnxruntime"], LADDERS["nncf"][3]]


def recipes(setting: str, backend: str, *, searched: bool) -> list[Recipe]:
    """The recipes an export tries for deploy.int8_quantizer `setting` and test.backend: the tool's ladder, or with
    `auto` AUTO_LADDER (ONNX Runtime's ladder alone for test.backend=onnxruntime, which cannot read NNCF's IR); all
    of it when the result can be measured (`searched`), else its first."""
    if setting == "auto" and backend != "onnxruntime":
        ladder = AUTO_LADDER
    else:
        ladder = LADDERS[resolve_quantizer(setting, backend)]
    return ladder if searched else ladder[:1]


def output_layers(onnx_path: Path) -> tuple[str, ...]:
    """ONNX node names of the layers that compute scores and box deltas, found by the module path that torch's
    exporter records on every node (its `namespace` metadata). RuntimeError when there is none: a graph from
    another exporter, where the recipe cannot say which layers to keep in float."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    names = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        modules = [part.split(":")[0].rsplit(".", 1)[-1] for part in namespace.split("/")]
        if any(module in OUTPUT_MODULES for module in modules):
            names.append(node.name)
    if not names:
        raise RuntimeError(f"{onnx_path}: no node carries the module path of {', '.join(OUTPUT_MODULES)} in its "
                           "namespace metadata; was it written by detres's exporter?")
    return tuple(names)
