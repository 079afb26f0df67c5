"""The torch side's errors, under the runtime's one base (EdgeSerError), so that the CLI reports each as one line.

Kept in a module of their own so that onnx_export and quantize (which raise them) need not import each other.
"""
from __future__ import annotations

from edge_ser.errors import EdgeSerError


class ExportError(EdgeSerError):
    """An export that cannot be made or does not reproduce torch."""


class InputError(EdgeSerError, ValueError):
    """A config, corpus, checkpoint or argument the torch side cannot use: one line naming it and what is allowed."""
