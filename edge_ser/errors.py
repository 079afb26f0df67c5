"""One base for the runtime's errors, so that a device app can catch them in one place.

Each error's message is one line that names what was wrong and what is allowed; the CLI prints it as is.
The builtin bases stay (ValueError for bad input, RuntimeError for a budget refusal) so older
`except ValueError` code keeps working.
"""
from __future__ import annotations


class EdgeSerError(Exception):
    """Anything the runtime refuses: bad audio, a bad model directory or profile, a budget nothing fits.

    results: raised by Stream.accept/flush for one utterance, the results of the chunk's other utterances.
    """

    results: list = []  # replaced per instance, never mutated


class AudioError(EdgeSerError, ValueError):
    """The audio cannot be used: one line that says why."""


class ManifestError(EdgeSerError, ValueError):
    """The model directory is not usable: a clear one-line reason."""


class ProfileError(EdgeSerError, ValueError):
    """A device profile that cannot be used: corrupt, from another version, or made for another model."""


class BudgetError(EdgeSerError, RuntimeError):
    """--strict and not even the first exit fits the budget."""


class StreamError(EdgeSerError, ValueError):
    """A stream used out of order (accept after flush) or with settings it does not allow."""


class ProviderError(EdgeSerError, ValueError):
    """An onnxruntime execution provider that cannot be used here (not in this build, or a malformed name)."""
