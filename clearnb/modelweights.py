"""A model's weights: stored in the artifact storage as artifacts are, read back verified.

A weights file is stored as it is, a package (a folder, or several files) as a zip of its
contents, both under ``{artifact storage}/{task id}/model-{model id}/`` (or below the
``upload_uri`` given): written under a temporary name and renamed, with their sha256 and
size kept in the model's row, so that every read is checked against them. A URL
registered as it is (``register_uri``) is read with the
:class:`~clearnb.storage.StorageManager`, unverified, as ClearML reads it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from clearnb.artifacts import ArtifactStorage
from clearnb.artifacts.codecs import FolderCodec
from clearnb.backend import Backend
from clearnb.config import make_private_folder
from clearnb.errors import ModelError
from clearnb.scratch import scratch_folder
from clearnb.store.records import ArtifactRecord, ModelRecord

__all__ = ["PACKAGE_TAG", "guess_framework", "local_copy", "store_file", "store_package"]

PACKAGE_TAG = "package"
"""The system tag of a model whose weights are a package (a folder), as ClearML's."""
DEFAULT_PACKAGE = "model_package"
"""The name of a package stored without ``target_filename``, as ClearML names it."""

_FRAMEWORK_SUFFIXES = (
    (".pth", "PyTorch"),
    (".pt", "PyTorch"),
    (".onnx", "ONNX"),
    (".h5", "Keras"),
    (".hdf5", "Keras"),
    (".keras", "Keras"),
    (".tflite", "TensorFlow_Lite"),
    (".pb", "TensorFlow"),
    (".pkl", "ScikitLearn"),
    (".joblib", "ScikitLearn"),
    (".cbm", "CatBoost"),
    (".parquet", "Parquet"),
)


def guess_framework(filename: str) -> str:
    """The framework a weights file's name suggests (ClearML's names), or ``""``."""
    lowered = filename.lower()
    return next((name for suffix, name in _FRAMEWORK_SUFFIXES if lowered.endswith(suffix)), "")


def _storage(backend: Backend, upload_uri: str | None) -> ArtifactStorage:
    if not upload_uri:
        return backend.artifacts
    return ArtifactStorage(upload_uri, backend.artifacts.cache_dir)


def _folder_of(model: ModelRecord, task_id: str) -> tuple[str, str]:
    """The (task id, artifact name) under which ``model``'s weights are stored."""
    return task_id, f"model-{model.id}"


def store_file(
    backend: Backend,
    model: ModelRecord,
    task_id: str,
    source: Path,
    target_filename: str | None = None,
    upload_uri: str | None = None,
) -> ArtifactRecord:
    """Store the weights file ``source`` of ``model`` (named ``target_filename``, if
    given); returns where it went, with its hash and size."""
    if not source.is_file():
        raise ModelError(
            f"No weights file at {str(source)!r}: pass the path of the saved model file "
            "(or a folder, stored as a package).",
            path=str(source),
        )
    folder, name = _folder_of(model, task_id)
    with scratch_folder(backend.config.cache_dir, "model") as scratch:
        named = source
        if target_filename and Path(target_filename).name != source.name:
            named = Path(scratch) / Path(target_filename).name
            named.symlink_to(source.absolute())
        return _storage(backend, upload_uri).save(folder, name, named, codec="file")


def store_package(
    backend: Backend,
    model: ModelRecord,
    task_id: str,
    files: Sequence[Path] = (),
    folder: Path | None = None,
    target_filename: str | None = None,
    upload_uri: str | None = None,
) -> ArtifactRecord:
    """Store a package of weights, the folder ``folder`` or the ``files`` (kept with
    their paths below the folder they share), as a zip named ``target_filename``."""
    stem = Path(target_filename or DEFAULT_PACKAGE).name
    stem = stem[: -len(".zip")] if stem.lower().endswith(".zip") else stem
    with scratch_folder(backend.config.cache_dir, "model") as scratch:
        root = Path(scratch) / (stem or DEFAULT_PACKAGE)
        if folder is not None:
            if not folder.is_dir():
                raise ModelError(f"No folder at {str(folder)!r} to store as a package.")
            root.symlink_to(folder.absolute(), target_is_directory=True)
        else:
            missing = [str(f) for f in files if not Path(f).is_file()]
            if missing:
                raise ModelError(f"No weights file at {', '.join(missing)}.", paths=missing)
            absolute = [Path(f).absolute() for f in files]
            base = Path(os.path.commonpath(absolute)) if len(absolute) > 1 else None
            root.mkdir()
            for path in absolute:
                place = root / (path.relative_to(base) if base else path.name)
                place.parent.mkdir(parents=True, exist_ok=True)
                place.symlink_to(path)
        store_folder, name = _folder_of(model, task_id)
        return _storage(backend, upload_uri).save(store_folder, name, root, codec="folder")


def weights_record(model: ModelRecord) -> ArtifactRecord:
    """The stored weights of ``model``, as the artifact storage reads and verifies them."""
    return ArtifactRecord(
        task_id=model.task_id or "",
        name=f"model-{model.id}",
        url=model.uri or "",
        codec=model.codec,
        type="model weights",
        hash=model.hash,
        size=model.size,
    )


def local_copy(backend: Backend, model: ModelRecord, *, extract: bool, refresh: bool) -> str:
    """A local path holding ``model``'s weights: the file, or with ``extract`` the folder
    a package (or an archive) unpacks into. Stored weights are verified first."""
    if not model.uri:
        raise ModelError(
            f"Model {model.id} ({model.name}) has no weights yet: store them with "
            "OutputModel.update_weights(...).",
            model_id=model.id,
        )
    if not model.codec:  # a URL registered as it is
        from clearnb.storage import StorageManager

        return StorageManager.get_local_copy(
            model.uri, extract_archive=extract, force_download=refresh
        )
    record = weights_record(model)
    path = backend.artifacts.local_copy(record, refresh=refresh)
    if not extract or not (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
        return str(path)
    workdir = backend.artifacts.cache_dir / "models" / model.hash
    make_private_folder(workdir)
    unpacked: str = FolderCodec().decode_into(path, workdir)
    return unpacked


def delete_local(path: Path) -> None:
    """Remove the local weights (a file or a folder) once they are stored."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
