"""edge-ser: speech emotion recognition with early exits, for small devices.

The runtime needs onnxruntime, numpy, soundfile, pyyaml and psutil (soxr to
resample) and never imports torch, transformers or onnx.

    from edge_ser import Classifier
    result = Classifier("models/demo").classify("clip.wav", budget_ms=50)
"""
from .audio import AudioError
from .classifier import BudgetError, Classifier, Plan, Result
from .manifest import ManifestError

__version__ = "0.1.0"
__all__ = ["AudioError", "BudgetError", "Classifier", "ManifestError", "Plan", "Result", "__version__"]
