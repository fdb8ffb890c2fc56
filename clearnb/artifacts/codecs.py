"""Codecs: how each kind of Python value is written to one file and read back.

A :class:`Codec` turns a value into exactly one file (``encode``) and that file back into a
value (``decode``). A :class:`CodecRegistry` holds codecs in matching order; the first codec
whose ``matches`` accepts a value stores it. :func:`default_codecs` builds a fresh registry
with the built-in codecs, in this order:

``npy``      numpy arrays without Python objects inside (read back with ``allow_pickle=False``)
``parquet``  pandas DataFrames and Series (needs ``pip install 'clearnb[pandas]'``)
``figure``   matplotlib figures and PIL images, as PNG
``file``     an existing file path: the file itself, under its own name
``folder``   an existing folder path: a zip of it, unpacked again on load
``json``     dicts, lists, tuples, strings, numbers, booleans and ``None`` made only of those
``pickle``   anything else (the storage layer checks the hash before unpickling)

Matching never imports an optional library: a value can only be a pandas DataFrame if pandas
is already imported, so codecs look in ``sys.modules`` first.
"""

from __future__ import annotations

import json
import os
import pickle
import reprlib
import shutil
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

from clearnb.artifacts.archives import unpacked
from clearnb.config import make_private_folder
from clearnb.errors import CodecError, FallbackWarning, MissingDependencyError

PREVIEW_LIMIT = 200
"""Longest preview, in characters."""
SHORT_VALUE = 80
"""A dict whose JSON is at most this long is previewed whole."""

PANDAS_HINT = "pip install 'clearnb[pandas]'"

_MAX_PATH_CHARS = 4096
_MAX_JSON_DEPTH = 200
_SERIES_COLUMN = "__clearnb_series__"
_PARQUET_META_KEY = b"clearnb"

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = 6
_repr.maxtuple = 6
_repr.maxdict = 6


def shorten(text: str, limit: int = PREVIEW_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def qualified_type_name(obj: object) -> str:
    """``module.Class`` of ``obj``'s type; builtins without the module (``dict``)."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def format_size(size: int) -> str:
    """A byte count for people: ``512 B``, ``1.2 kB``, ``3.4 MB``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _loaded(module: str) -> ModuleType | None:
    """``module`` if it is imported (and done importing), else None.

    Codecs never import a library just to check a value's type: a value of a type from a
    module nobody imported cannot exist. A module another thread is still importing is
    treated as absent, since its classes may not be defined yet.
    """
    found = sys.modules.get(module)
    if found is None or getattr(getattr(found, "__spec__", None), "_initializing", False):
        return None
    return found


class Codec:
    """Writes one kind of value to a single file and reads it back.

    Subclasses set :attr:`name` (unique in a registry) and :attr:`suffix`, and fill in
    :meth:`matches`, :meth:`encode` and :meth:`decode`.
    """

    name: str = ""
    suffix: str = ""
    """File name suffix of what :meth:`encode` writes, e.g. ``.npy``."""
    keeps_filename: bool = False
    """True when the encoded file's name means something (a user's file) and must be kept;
    otherwise the storage names the stored file after the artifact."""

    def matches(self, obj: Any) -> bool:
        """Whether this codec can store ``obj``."""
        raise NotImplementedError

    def encode(self, obj: Any, folder: Path) -> Path:
        """Write ``obj`` as one file inside ``folder`` and return that file's path."""
        raise NotImplementedError

    def decode(self, path: Path) -> Any:
        """Read back a value written by :meth:`encode`."""
        raise NotImplementedError

    def decode_into(self, path: Path, workdir: Path) -> Any:
        """Like :meth:`decode`, for codecs that derive files (an unpacked folder): those go
        into ``workdir`` instead of next to ``path``, which may be the stored copy itself."""
        return self.decode(path)

    def preview(self, obj: Any) -> str:
        """A short, human-readable summary of ``obj`` (at most :data:`PREVIEW_LIMIT` chars)."""
        return shorten(f"{self.type_name(obj)} {_repr.repr(obj)}")

    def type_name(self, obj: Any) -> str:
        """The name recorded as the artifact's type, e.g. ``numpy.ndarray``."""
        return qualified_type_name(obj)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _Writer:
    """A file's ``write`` alone. numpy writes real files with C ``fwrite`` and reports a
    failed write (a full disk) without its cause; through this it writes with Python's
    ``write``, whose ``OSError`` keeps the errno (``ENOSPC``, ``EFBIG``)."""

    def __init__(self, stream: Any) -> None:
        self.write = stream.write


class NpyCodec(Codec):
    """numpy arrays of plain dtypes (numbers, bools, strings, structured) as ``.npy``."""

    name = "npy"
    suffix = ".npy"

    def matches(self, obj: Any) -> bool:
        np = _loaded("numpy")
        if np is None:
            return False
        return type(obj) in (np.ndarray, np.memmap) and not obj.dtype.hasobject

    def encode(self, obj: Any, folder: Path) -> Path:
        import numpy as np

        path = folder / f"value{self.suffix}"
        with open(path, "wb") as stream:
            np.save(_Writer(stream), np.asarray(obj), allow_pickle=False)
        return path

    def decode(self, path: Path) -> Any:
        import numpy as np

        return np.load(path, allow_pickle=False)

    def preview(self, obj: Any) -> str:
        text = f"ndarray {obj.dtype} {tuple(obj.shape)}"
        if obj.ndim == 0:
            text += f" = {_repr.repr(obj.item())}"
        return shorten(text)

    def type_name(self, obj: Any) -> str:
        return f"numpy.{type(obj).__name__}"


def _import_pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise MissingDependencyError(
            f"Storing or reading pandas objects as parquet needs pandas; run {PANDAS_HINT}.",
            package="pandas",
        ) from exc
    return pandas


def _import_parquet() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise MissingDependencyError(
            f"Storing or reading pandas objects as parquet needs pyarrow; run {PANDAS_HINT}.",
            package="pyarrow",
        ) from exc
    return pyarrow, pyarrow.parquet


class ParquetCodec(Codec):
    """pandas DataFrames (string column names) and Series as ``.parquet``.

    A Series is stored as a one-column frame and comes back as a Series with its name.
    Frames whose column names are not unique strings do not survive parquet and are left to
    the next codec.
    """

    name = "parquet"
    suffix = ".parquet"

    def __init__(self) -> None:
        self._warned = False

    def matches(self, obj: Any) -> bool:
        pd = _loaded("pandas")
        if pd is None:
            return False
        if isinstance(obj, pd.Series):
            fits = obj.name is None or type(obj.name) in (str, int, float, bool)
        elif isinstance(obj, pd.DataFrame):
            columns = obj.columns
            fits = (
                not isinstance(columns, pd.MultiIndex)
                and columns.is_unique
                and all(type(column) is str for column in columns)
            )
        else:
            return False
        return fits and self._parquet_available()

    def _parquet_available(self) -> bool:
        """Whether pyarrow can be imported; without it, say once that pandas objects are
        pickled instead (hash-checked, as every artifact) and how to get parquet."""
        try:
            _import_parquet()
        except MissingDependencyError:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "pyarrow is not installed, so pandas objects are stored as pickles "
                    f"(read back with the same pandas version) instead of parquet; run "
                    f"{PANDAS_HINT} to store them as parquet",
                    FallbackWarning,
                    stacklevel=2,
                )
            return False
        return True

    def encode(self, obj: Any, folder: Path) -> Path:
        pd = _import_pandas()
        pa, pq = _import_parquet()
        if isinstance(obj, pd.Series):
            frame = obj.to_frame(name=_SERIES_COLUMN)
            info: dict[str, Any] = {"kind": "series", "name": obj.name}
        else:
            frame = obj
            info = {"kind": "dataframe"}
        table = pa.Table.from_pandas(frame)
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[_PARQUET_META_KEY] = json.dumps(info).encode("utf-8")
        table = table.replace_schema_metadata(schema_meta)
        path = folder / f"value{self.suffix}"
        pq.write_table(table, path)
        return path

    def decode(self, path: Path) -> Any:
        _import_pandas()
        _, pq = _import_parquet()
        table = pq.read_table(path)
        frame = table.to_pandas()
        raw = (table.schema.metadata or {}).get(_PARQUET_META_KEY)
        info = json.loads(raw) if raw else {}
        if info.get("kind") == "series":
            series = frame[_SERIES_COLUMN]
            series.name = info.get("name")
            return series
        return frame

    def preview(self, obj: Any) -> str:
        pd = _loaded("pandas")
        if pd is not None and isinstance(obj, pd.Series):
            return shorten(f"Series {obj.name!r} {obj.dtype} ({len(obj)},)")
        columns = ", ".join(str(column) for column in list(obj.columns[:12]))
        more = ", …" if len(obj.columns) > 12 else ""
        return shorten(f"DataFrame {obj.shape} columns: {columns}{more}")

    def type_name(self, obj: Any) -> str:
        return f"pandas.{type(obj).__name__}"


class FigureCodec(Codec):
    """matplotlib figures and PIL images as PNG; read back as a PIL image (or, without
    Pillow, as the numpy array ``matplotlib.image.imread`` gives)."""

    name = "figure"
    suffix = ".png"

    @staticmethod
    def _is_figure(obj: Any) -> bool:
        module = _loaded("matplotlib.figure")
        return module is not None and isinstance(obj, module.Figure)

    @staticmethod
    def _is_image(obj: Any) -> bool:
        module = _loaded("PIL.Image")
        return module is not None and isinstance(obj, module.Image)

    def matches(self, obj: Any) -> bool:
        return self._is_figure(obj) or self._is_image(obj)

    def encode(self, obj: Any, folder: Path) -> Path:
        path = folder / f"value{self.suffix}"
        if self._is_figure(obj):
            obj.savefig(path, format="png", bbox_inches="tight")
        else:
            obj.save(path, format="PNG")
        return path

    def decode(self, path: Path) -> Any:
        try:
            from PIL import Image
        except ImportError:
            import matplotlib.image

            return matplotlib.image.imread(path)
        image = Image.open(path)
        image.load()  # reads the pixels and closes the file
        return image

    def preview(self, obj: Any) -> str:
        if self._is_figure(obj):
            width, height = obj.get_size_inches() * obj.dpi
            return f"Figure {round(width)}x{round(height)} px, {len(obj.axes)} axes"
        return f"Image {obj.mode} {obj.width}x{obj.height}"

    def type_name(self, obj: Any) -> str:
        if self._is_figure(obj):
            return "matplotlib.figure.Figure"
        return "PIL.Image.Image"


def _existing_path(obj: Any) -> str | None:
    """``obj`` as a path string when it is a ``str`` or path object, else ``None``."""
    if isinstance(obj, PurePath):
        return str(obj)
    if type(obj) is str and 0 < len(obj) <= _MAX_PATH_CHARS:
        return obj
    return None


def _path_type_name(obj: Any) -> str:
    return "pathlib.Path" if isinstance(obj, PurePath) else qualified_type_name(obj)


class FileCodec(Codec):
    """An existing file, given by its path: stored as is, under its own name.

    Reading back gives the path of the local copy as a ``str``, as ClearML does for files.
    """

    name = "file"
    keeps_filename = True

    def matches(self, obj: Any) -> bool:
        path = _existing_path(obj)
        return path is not None and os.path.isfile(path)

    def encode(self, obj: Any, folder: Path) -> Path:
        source = Path(os.fspath(obj))
        target = folder / source.name
        shutil.copyfile(source, target)
        return target

    def decode(self, path: Path) -> Any:
        return str(path)

    def preview(self, obj: Any) -> str:
        path = Path(os.fspath(obj))
        return shorten(f"file {path.name} ({format_size(path.stat().st_size)})")

    def type_name(self, obj: Any) -> str:
        return _path_type_name(obj)


def _walk_folder(root: Path) -> Iterator[tuple[Path, bool]]:
    """Every directory and regular file below ``root`` as ``(path, is_dir)``, sorted.

    Links to folders are not followed (they could loop); links to files are stored as the
    file they point to.
    """
    for current, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(current)
        for dirname in dirnames:
            if not (base / dirname).is_symlink():
                yield base / dirname, True
        for filename in sorted(filenames):
            path = base / filename
            if path.is_file():
                yield path, False


class FolderCodec(Codec):
    """An existing folder, given by its path: stored as a zip of its contents.

    Reading back unpacks the zip into a folder named like the original one and returns that
    folder's path as a ``str``.
    """

    name = "folder"
    suffix = ".zip"
    keeps_filename = True

    def matches(self, obj: Any) -> bool:
        path = _existing_path(obj)
        return path is not None and os.path.isdir(path)

    def encode(self, obj: Any, folder: Path) -> Path:
        source = Path(os.fspath(obj)).absolute()
        target = folder / f"{source.name or 'folder'}{self.suffix}"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for path, is_dir in _walk_folder(source):
                arcname = path.relative_to(source).as_posix()
                if is_dir:
                    archive.writestr(zipfile.ZipInfo(arcname + "/"), b"")
                else:
                    archive.write(path, arcname)
        return target

    def decode(self, path: Path) -> Any:
        return self.decode_into(path, path.parent)

    def decode_into(self, path: Path, workdir: Path) -> Any:
        stem = path.name[: -len(self.suffix)] if path.name.endswith(self.suffix) else path.name
        make_private_folder(workdir)
        return str(unpacked(path, workdir / (stem or "folder")))

    def preview(self, obj: Any) -> str:
        source = Path(os.fspath(obj))
        files = 0
        size = 0
        for path, is_dir in _walk_folder(source):
            if not is_dir:
                files += 1
                size += path.stat().st_size
        return shorten(f"folder {source.name}: {files} files, {format_size(size)}")

    def type_name(self, obj: Any) -> str:
        return _path_type_name(obj)


_JSON_SCALARS = (str, int, float, bool, type(None))


def is_json_value(obj: Any, _depth: int = 0) -> bool:
    """Whether ``obj`` is made only of JSON types (dicts with ``str`` keys, lists, tuples,
    strings, numbers, booleans, ``None``), so that it survives a JSON round trip."""
    if _depth > _MAX_JSON_DEPTH:
        return False
    kind = type(obj)
    if kind in _JSON_SCALARS:
        return True
    if kind is list or kind is tuple:
        return all(is_json_value(item, _depth + 1) for item in obj)
    if kind is dict:
        return all(
            type(key) is str and is_json_value(value, _depth + 1) for key, value in obj.items()
        )
    return False


class JsonCodec(Codec):
    """Plain data as ``.json``. Tuples come back as lists."""

    name = "json"
    suffix = ".json"

    def matches(self, obj: Any) -> bool:
        return is_json_value(obj)

    def encode(self, obj: Any, folder: Path) -> Path:
        path = folder / f"value{self.suffix}"
        path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
        return path

    def decode(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def preview(self, obj: Any) -> str:
        if type(obj) is dict:
            whole = json.dumps(obj, ensure_ascii=False, default=str)
            if len(whole) <= SHORT_VALUE:  # small enough to show as it is
                return whole
            keys = ", ".join(str(key) for key in list(obj)[:10])
            more = ", …" if len(obj) > 10 else ""
            noun = "key" if len(obj) == 1 else "keys"
            return shorten(f"dict with {len(obj)} {noun}: {keys}{more}")
        if type(obj) in (list, tuple):
            return shorten(f"{type(obj).__name__} of {len(obj)}: {_repr.repr(obj)}")
        return shorten(f"{type(obj).__name__} {_repr.repr(obj)}")


class PickleCodec(Codec):
    """Anything else, pickled. Only ever unpickled after its hash was checked."""

    name = "pickle"
    suffix = ".pkl"

    def matches(self, obj: Any) -> bool:
        return True

    def encode(self, obj: Any, folder: Path) -> Path:
        path = folder / f"value{self.suffix}"
        try:
            with open(path, "wb") as stream:
                pickle.dump(obj, stream, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            type_name = self.type_name(obj)
            raise CodecError(
                f"A {type_name} cannot be pickled ({type(exc).__name__}: {exc}).",
                type=type_name,
            ) from exc
        return path

    def decode(self, path: Path) -> Any:
        with open(path, "rb") as stream:
            return pickle.load(stream)


class CodecRegistry:
    """Codecs in matching order; the first codec that matches a value stores it."""

    def __init__(self, codecs: Iterable[Codec] = ()) -> None:
        self._codecs: list[Codec] = []
        for codec in codecs:
            self.register(codec)

    def register(self, codec: Codec, *, first: bool = False) -> Codec:
        """Add ``codec`` at the end (or the front with ``first=True``).

        A codec with the same name is replaced, in its place unless ``first`` is given.
        """
        if not codec.name:
            raise ValueError(f"{codec!r} has no name; set the 'name' class attribute.")
        names = self.names()
        if codec.name in names and not first:
            self._codecs[names.index(codec.name)] = codec
            return codec
        self._codecs = [known for known in self._codecs if known.name != codec.name]
        if first:
            self._codecs.insert(0, codec)
        else:
            self._codecs.append(codec)
        return codec

    def get(self, name: str) -> Codec:
        """The codec called ``name``."""
        for codec in self._codecs:
            if codec.name == name:
                return codec
        raise CodecError(
            f"No codec named {name!r}; known codecs: {', '.join(self.names()) or 'none'}. "
            "Register it with CodecRegistry.register() before storing or loading.",
            codec=name,
        )

    def candidates(self, obj: Any) -> list[Codec]:
        """Every codec that matches ``obj``, in matching order."""
        return [codec for codec in self._codecs if codec.matches(obj)]

    def for_object(self, obj: Any) -> Codec:
        """The first codec that matches ``obj``."""
        for codec in self._codecs:
            if codec.matches(obj):
                return codec
        type_name = qualified_type_name(obj)
        raise CodecError(
            f"No codec can store a {type_name}; convert it to a numpy array, a pandas "
            "DataFrame, a dict of plain values or a file path.",
            type=type_name,
        )

    def refuse_pickle(self, name: str, obj: Any) -> None:
        """Raise if ``obj`` (the artifact ``name``) would be stored by pickling it."""
        if self.for_object(obj).name == "pickle":
            kind = type(obj).__name__
            raise CodecError(
                f"artifact {name!r}: a {kind} would be stored by pickling it, which "
                "auto_pickle=False refuses; store a dict, list, array, data frame or file "
                "path, or pass a serialization_function",
                name=name,
                type=kind,
            )

    def names(self) -> list[str]:
        """Codec names in matching order."""
        return [codec.name for codec in self._codecs]

    def __iter__(self) -> Iterator[Codec]:
        return iter(list(self._codecs))

    def __len__(self) -> int:
        return len(self._codecs)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __repr__(self) -> str:
        return f"CodecRegistry({self.names()})"


def default_codecs() -> CodecRegistry:
    """A new registry with the built-in codecs in their matching order."""
    return CodecRegistry(
        [
            NpyCodec(),
            ParquetCodec(),
            FigureCodec(),
            FileCodec(),
            FolderCodec(),
            JsonCodec(),
            PickleCodec(),
        ]
    )
