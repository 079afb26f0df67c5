"""edge-ser: speech emotion recognition with early exits, for small devices.

The runtime needs onnxruntime, numpy, soundfile, pyyaml and psutil (soxr to
resample) and never imports torch, transformers or onnx.

    from edge_ser import Classifier
    result = Classifier("models/demo").classify("clip.wav", budget_ms=50)

    stream = Classifier("models/demo").stream(sample_rate=16000, budget_ms=50)
    for result in stream.accept(chunk):   # any size; results of utterances that ended in it
        ...
"""
from .classifier import Classifier, Plan, Result
from .endpoint import EndpointOptions
from .errors import AudioError, BudgetError, EdgeSerError, ManifestError, ProfileError, ProviderError, StreamError
from .options import OptionError, RunOptions
from .stream import Stream

__version__ = "0.1.0"
__all__ = ["AudioError", "BudgetError", "Classifier", "EdgeSerError", "EndpointOptions", "ManifestError", "OptionError",
           "Plan", "ProfileError", "ProviderError", "Result", "RunOptions", "Stream", "StreamError", "__version__"]
