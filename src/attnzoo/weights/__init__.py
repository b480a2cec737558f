"""Released checkpoints into attnzoo's models: safe loading, layout detection, exact key
conversion (biases attnzoo drops are folded), a table of known releases and their download.

    model = attnzoo.models.create("resnet50", attention="cbam", num_classes=1000,
                                  weights="RESNET50_CBAM_new_name_wrap.pth")

See docs/pretrained.md for the supported layouts and releases.
"""

from attnzoo.weights.build import build_model, create_pretrained, load_pretrained, read_plan
from attnzoo.weights.layouts import LAYOUTS, Plan, detect_layout, get_layout
from attnzoo.weights.load import read_checkpoint, save_safetensors

__all__ = [
    "LAYOUTS",
    "Plan",
    "build_model",
    "create_pretrained",
    "detect_layout",
    "get_layout",
    "load_pretrained",
    "read_checkpoint",
    "read_plan",
    "save_safetensors",
]
