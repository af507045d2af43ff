"""The LatentloopError hierarchy: every error a user can cause or meet, with a clear message."""

from __future__ import annotations


class LatentloopError(Exception):
    """Base of every error latentloop raises on purpose (as opposed to programmer errors)."""


class ConfigError(LatentloopError):
    """A setting or a model config is invalid or unsupported."""


class ModelLoadError(LatentloopError):
    """A model could not be found, downloaded, read or loaded."""


class ModelNotFoundError(ModelLoadError):
    """The named model (repo id, folder or file) does not exist or is not available offline."""


class ModelAccessError(ModelLoadError):
    """The hub refused access (gated repo, bad or missing token)."""


class HubUnreachableError(ModelLoadError):
    """The Hugging Face Hub (or the HF_ENDPOINT mirror) could not be reached over the network."""


class UnsafeCheckpointError(ModelLoadError):
    """A .ckpt file needs arbitrary unpickling and the user did not say they trust it."""


class RenderError(LatentloopError):
    """A render request is invalid or failed."""


class OutputError(RenderError):
    """A file could not be written (disk full, permissions, a name taken meanwhile)."""


class RenderCancelled(RenderError):
    """A render was cancelled; raised from the step callback between sampler steps."""


class AudioDeviceError(LatentloopError):
    """The sound card or audio server failed (wraps ``sounddevice.PortAudioError``)."""


class PlaybackError(LatentloopError):
    """A playback request cannot be carried out; ``code`` is its protocol fail code."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class OutputFolderLocked(LatentloopError):
    """Another latentloop daemon holds the output folder's lock."""


class PathRefused(LatentloopError):
    """A path a client named resolves outside the folders it may read (docs/security.md)."""


class BadOutputError(RenderError):
    """The model produced NaN or infinite samples."""


class EngineError(RenderError):
    """The engine failed while rendering: an exception of its own (not one of ours), or its
    process ended. ``/fail ... engine``; the next render runs normally."""


class OutOfMemoryError(RenderError):
    """The device ran out of memory, even after a retry with a smaller batch."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the device (or the host) running out of memory: ours, Python's
    ``MemoryError``, or ``torch.OutOfMemoryError`` (CUDA, MPS) told without importing torch."""
    if isinstance(error, OutOfMemoryError | MemoryError):
        return True
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error)[:200]
