"""The torch side of edge-ser: model, losses, data, training, evaluation and ONNX export.

Installed with the `train` extra (`pip install -e '.[train]'`); the device runtime in
`edge_ser` never imports it.
"""
