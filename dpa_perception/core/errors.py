"""Typed exceptions raised by the library; the CLIs turn them into one-line messages."""

from __future__ import annotations


class DpaError(Exception):
    """Base class of every error the package raises on purpose."""


class ModelError(DpaError):
    """A model file is missing, corrupt, or not of a supported layout."""


class UnknownFamilyError(ModelError):
    """The model family could not be determined or is not supported."""


class ManifestError(DpaError):
    """An engine folder's manifest is missing, malformed or does not match its files."""


class ImageError(DpaError):
    """An input image is empty, truncated, of an unknown encoding or otherwise undecodable."""


class ConfigError(DpaError):
    """A parameter or option has an invalid value."""


class BagError(DpaError):
    """A rosbag cannot be read or holds nothing usable."""


class BackendError(DpaError):
    """An inference backend is unavailable or refused to load an engine."""
