"""Inference on any folder of photos: inputs and output names (inputs), the run itself (run)."""

from petseg.inference.inputs import folder_images, output_names, raw_test_images, resolve_checkpoint, safe_stem
from petseg.inference.run import InferenceResult, Skipped, infer_folder, infer_images

__all__ = [
    "InferenceResult",
    "Skipped",
    "folder_images",
    "infer_folder",
    "infer_images",
    "output_names",
    "raw_test_images",
    "resolve_checkpoint",
    "safe_stem",
]
