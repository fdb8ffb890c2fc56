"""Artifacts: typed values stored as files by codecs, on any fsspec file system."""

from __future__ import annotations

from clearnb.artifacts.codecs import Codec, CodecRegistry, default_codecs
from clearnb.artifacts.handle import Artifact
from clearnb.artifacts.storage import ArtifactStorage, validate_artifact_name

__all__ = [
    "Artifact",
    "ArtifactStorage",
    "Codec",
    "CodecRegistry",
    "default_codecs",
    "validate_artifact_name",
]
