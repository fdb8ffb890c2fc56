"""Codecs: each kind of value round-trips through the codec that matches it."""

from __future__ import annotations

import builtins
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clearnb.artifacts import Codec, CodecRegistry, default_codecs
from clearnb.artifacts.archives import safe_extract
from clearnb.errors import CodecError

matplotlib.use("Agg")
import matplotlib.pyplot as plt


class Point:
    """A plain user class; only pickle can store it."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def round_trip(obj: Any, tmp_path: Path) -> tuple[str, Any]:
    """Encode ``obj`` with the codec that matches it and decode it again."""
    codec = default_codecs().for_object(obj)
    folder = tmp_path / "encoded"
    folder.mkdir(parents=True, exist_ok=True)
    path = codec.encode(obj, folder)
    assert path.is_file()
    assert path.parent == folder
    return codec.name, codec.decode(path)


def test_default_codecs_are_in_matching_order() -> None:
    registry = default_codecs()
    assert registry.names() == ["npy", "parquet", "figure", "file", "folder", "json", "pickle"]
    assert default_codecs() is not registry


def test_register_first_and_replace() -> None:
    class Upper(Codec):
        name = "upper"
        suffix = ".txt"

        def matches(self, obj: Any) -> bool:
            return isinstance(obj, str)

        def encode(self, obj: Any, folder: Path) -> Path:
            path = folder / "value.txt"
            path.write_text(obj.upper())
            return path

        def decode(self, path: Path) -> Any:
            return path.read_text()

    registry = default_codecs()
    registry.register(Upper(), first=True)
    assert registry.names()[0] == "upper"
    assert registry.for_object("hi").name == "upper"
    assert registry.for_object(3).name == "json"

    replacement = Upper()
    registry.register(replacement)
    assert registry.names().count("upper") == 1
    assert registry.get("upper") is replacement
    assert registry.names()[0] == "upper"


def test_get_unknown_codec_names_known_ones() -> None:
    with pytest.raises(CodecError, match="known codecs: npy, parquet"):
        default_codecs().get("nope")


def test_empty_registry_cannot_store() -> None:
    with pytest.raises(CodecError, match="No codec can store a int"):
        CodecRegistry().for_object(1)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(480, dtype=np.float64).reshape(120, 4),
        np.array([-1, 0, 127], dtype=np.int8),
        np.array([[True, False], [False, True]]),
        np.array(3.5),
        np.array([(1, 2.0), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")]),
        np.array(["a", "bcd"]),
        np.array([1 + 2j, 3 - 1j]),
        np.zeros((0, 3), dtype=np.uint16),
    ],
    ids=["float64-2d", "int8", "bool", "0-d", "structured", "unicode", "complex", "empty"],
)
def test_ndarray_round_trip(array: np.ndarray[Any, Any], tmp_path: Path) -> None:
    name, value = round_trip(array, tmp_path)
    assert name == "npy"
    assert value.dtype == array.dtype
    assert value.shape == array.shape
    np.testing.assert_array_equal(value, array)


def test_object_ndarray_goes_to_pickle(tmp_path: Path) -> None:
    array = np.array([{"a": 1}, None, "x"], dtype=object)
    name, value = round_trip(array, tmp_path)
    assert name == "pickle"
    assert list(value) == list(array)


def test_npy_preview_and_type() -> None:
    codec = default_codecs().get("npy")
    array = np.zeros((120, 4))
    assert codec.preview(array) == "ndarray float64 (120, 4)"
    assert codec.type_name(array) == "numpy.ndarray"
    assert codec.preview(np.array(7)) == "ndarray int64 () = 7"


def test_dataframe_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [0.5, np.nan, 2.5],
            "s": ["a", "b", None],
            "b": [True, False, True],
            "t": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "c": pd.Categorical(["x", "y", "x"]),
        },
        index=pd.Index([10, 20, 30], name="id"),
    )
    name, value = round_trip(frame, tmp_path)
    assert name == "parquet"
    pd.testing.assert_frame_equal(value, frame)


def test_series_round_trip(tmp_path: Path) -> None:
    series = pd.Series([1.5, 2.5, 3.5], index=["a", "b", "c"], name="price")
    name, value = round_trip(series, tmp_path)
    assert name == "parquet"
    assert isinstance(value, pd.Series)
    pd.testing.assert_series_equal(value, series)

    unnamed = pd.Series([1, 2])
    _, value = round_trip(unnamed, tmp_path / "unnamed")
    pd.testing.assert_series_equal(value, unnamed)


def test_dataframe_that_parquet_cannot_hold_goes_to_pickle(tmp_path: Path) -> None:
    numbered = pd.DataFrame({0: [1, 2], "b": ["x", "y"]})
    assert default_codecs().for_object(numbered).name == "pickle"
    _, value = round_trip(numbered, tmp_path)
    pd.testing.assert_frame_equal(value, numbered)


def test_dataframe_preview_and_type() -> None:
    codec = default_codecs().get("parquet")
    frame = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
    assert codec.preview(frame) == "DataFrame (2, 2) columns: a, b"
    assert codec.type_name(frame) == "pandas.DataFrame"
    assert codec.type_name(frame["a"]) == "pandas.Series"


def test_figure_round_trip_gives_image_of_the_figure_size(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    ax.plot([1, 3, 2])
    try:
        fig.canvas.draw()
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)  # type: ignore[attr-defined]
        expected = (bbox.width * fig.dpi, bbox.height * fig.dpi)
        name, image = round_trip(fig, tmp_path)
    finally:
        plt.close(fig)
    assert name == "figure"
    assert isinstance(image, Image.Image)
    assert image.format == "PNG"
    assert abs(image.width - expected[0]) <= 2
    assert abs(image.height - expected[1]) <= 2
    assert 100 < image.width <= 200
    assert default_codecs().get("figure").preview(fig) == "Figure 200x150 px, 1 axes"


def test_pil_image_round_trip(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 32), (10, 20, 30))
    image.putpixel((5, 6), (255, 0, 0))
    name, value = round_trip(image, tmp_path)
    assert name == "figure"
    assert value.size == (64, 32)
    assert value.mode == "RGB"
    assert value.tobytes() == image.tobytes()


def test_figure_decodes_to_array_without_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = default_codecs().get("figure")
    path = codec.encode(Image.new("RGB", (8, 4), (255, 255, 255)), tmp_path)
    real_import = builtins.__import__

    def no_pillow_for_codecs(name: str, globals: Any = None, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("PIL") and (globals or {}).get("__name__") == type(codec).__module__:
            raise ImportError("No module named 'PIL'")
        return real_import(name, globals, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pillow_for_codecs)
    value = codec.decode(path)
    assert isinstance(value, np.ndarray)
    assert value.shape[:2] == (4, 8)


def test_file_round_trip_keeps_its_name(tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    source.write_text("a,b\n1,2\n")
    for given in (str(source), source):
        name, value = round_trip(given, tmp_path / f"out-{type(given).__name__}")
        assert name == "file"
        assert isinstance(value, str)
        assert Path(value).name == "report.csv"
        assert Path(value).read_text() == "a,b\n1,2\n"
    assert default_codecs().get("file").type_name(source) == "pathlib.Path"


def test_folder_round_trip_with_nested_files(tmp_path: Path) -> None:
    source = tmp_path / "dataset"
    (source / "train" / "deep").mkdir(parents=True)
    (source / "empty").mkdir()
    (source / "a.txt").write_text("alpha")
    (source / "train" / "b.bin").write_bytes(bytes(range(256)))
    (source / "train" / "deep" / "c.txt").write_text("gamma")
    codec = default_codecs().for_object(source)
    assert codec.name == "folder"
    (tmp_path / "enc").mkdir()
    encoded = codec.encode(source, tmp_path / "enc")
    assert encoded.name == "dataset.zip"
    restored = Path(codec.decode_into(encoded, tmp_path / "work"))
    assert restored == tmp_path / "work" / "dataset"
    assert (restored / "a.txt").read_text() == "alpha"
    assert (restored / "train" / "b.bin").read_bytes() == bytes(range(256))
    assert (restored / "train" / "deep" / "c.txt").read_text() == "gamma"
    assert (restored / "empty").is_dir()
    hidden = [p.name for p in (tmp_path / "work").iterdir() if p.name.startswith(".")]
    assert hidden == [".dataset.manifest.json"], "no scratch left, only the copy's manifest"
    assert codec.decode_into(encoded, tmp_path / "work") == str(restored)
    assert "3 files" in codec.preview(source)


def test_safe_extract_refuses_members_escaping_the_target(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("fine.txt", "ok")
        bundle.writestr("../escaped.txt", "gotcha")
    with pytest.raises(CodecError, match=r"\.\./escaped\.txt"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "fine.txt").exists()

    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as bundle:
        bundle.writestr("/etc/passwd-copy", "x")
    with pytest.raises(CodecError, match="absolute path"):
        safe_extract(absolute, tmp_path / "out2")


def test_safe_extract_refuses_tar_links_out(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../outside"
        bundle.addfile(link)
    with pytest.raises(CodecError, match="links outside"):
        safe_extract(archive, tmp_path / "out")


def test_safe_extract_unpacks_tar(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tgz"
    with tarfile.open(archive, "w:gz") as bundle:
        data = b"hello"
        info = tarfile.TarInfo("sub/hello.txt")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "sub" / "hello.txt").read_bytes() == b"hello"


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, None], "c": {"d": "e", "f": True}},
        [1, "two", 3.0, None, False],
        "just some text, not a path",
        42,
        2.5,
        None,
        True,
        "",
    ],
    ids=["dict", "list", "str", "int", "float", "none", "bool", "empty-str"],
)
def test_json_round_trip(value: Any, tmp_path: Path) -> None:
    name, decoded = round_trip(value, tmp_path)
    assert name == "json"
    assert decoded == value
    assert type(decoded) is type(value)


def test_json_tuples_come_back_as_lists(tmp_path: Path) -> None:
    name, decoded = round_trip({"pair": (1, 2)}, tmp_path)
    assert name == "json"
    assert decoded == {"pair": [1, 2]}


def test_json_file_is_plain_json(tmp_path: Path) -> None:
    codec = default_codecs().get("json")
    path = codec.encode({"é": "ü"}, tmp_path)
    assert path.suffix == ".json"
    assert json.loads(path.read_text(encoding="utf-8")) == {"é": "ü"}


def test_string_naming_a_file_is_a_file_and_others_are_json(tmp_path: Path) -> None:
    (tmp_path / "exists.txt").write_text("x")
    registry = default_codecs()
    assert registry.for_object(str(tmp_path / "exists.txt")).name == "file"
    assert registry.for_object(str(tmp_path)).name == "folder"
    assert registry.for_object(str(tmp_path / "missing.txt")).name == "json"


@pytest.mark.parametrize(
    "value",
    [{"array": np.arange(3)}, {1: "int key"}, [np.float32(1.0)], {"s": {1, 2}}],
    ids=["array-inside", "int-keys", "numpy-scalar", "set-inside"],
)
def test_values_json_cannot_hold_go_to_pickle(value: Any, tmp_path: Path) -> None:
    name, decoded = round_trip(value, tmp_path)
    assert name == "pickle"
    assert repr(decoded) == repr(value)


def test_pickle_round_trip_of_a_custom_class(tmp_path: Path) -> None:
    name, decoded = round_trip(Point(1, 2), tmp_path)
    assert name == "pickle"
    assert decoded == Point(1, 2)
    assert default_codecs().get("pickle").type_name(Point(1, 2)).endswith("test_codecs.Point")


@pytest.mark.parametrize("value", [lambda x: x, (i for i in range(3))], ids=["lambda", "generator"])
def test_unpicklable_value_is_a_codec_error(value: Any, tmp_path: Path) -> None:
    codec = default_codecs().for_object(value)
    assert codec.name == "pickle"
    with pytest.raises(CodecError) as caught:
        codec.encode(value, tmp_path)
    assert type(value).__name__ in str(caught.value)


def test_previews_are_short() -> None:
    registry = default_codecs()
    big = {f"key{i}": "x" * 500 for i in range(100)}
    preview = registry.for_object(big).preview(big)
    assert preview.startswith("dict with 100 keys: key0, key1")
    assert len(preview) <= 200
    assert len(registry.get("pickle").preview(Point(1, 2))) <= 200
    assert len(registry.get("json").preview("y" * 10_000)) <= 200


def test_matching_does_not_import_optional_libraries() -> None:
    code = (
        "import sys\n"
        "from clearnb.artifacts import default_codecs\n"
        "before = set(sys.modules)\n"
        "r = default_codecs()\n"
        "assert r.for_object({'a': 1}).name == 'json'\n"
        "assert r.for_object(object()).name == 'pickle'\n"
        "new = set(sys.modules) - before\n"
        "loaded = [m for m in ('pandas', 'pyarrow', 'matplotlib', 'PIL', 'numpy') if m in new]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_module_another_thread_is_importing_counts_as_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from clearnb.artifacts import codecs

    gate = tmp_path / "go"
    (tmp_path / "cnb_slow_module.py").write_text(
        "import pathlib, time\n"
        f"while not pathlib.Path({str(gate)!r}).exists():\n"
        "    time.sleep(0.01)\n"
        "class Thing:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=__import__, args=("cnb_slow_module",))
    importer.start()
    try:
        deadline = time.monotonic() + 10
        while "cnb_slow_module" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "cnb_slow_module" in sys.modules, "the import started"
        assert codecs._loaded("cnb_slow_module") is None, "half imported: not usable yet"
    finally:
        gate.touch()
        importer.join(10)
    loaded = codecs._loaded("cnb_slow_module")
    assert loaded is not None and hasattr(loaded, "Thing")
    monkeypatch.delitem(sys.modules, "cnb_slow_module")


WITHOUT_PYARROW = """
import sys, warnings
sys.modules["pyarrow"] = None  # as if pyarrow were not installed
import pandas as pd
from clearnb.artifacts import ArtifactStorage
from clearnb.errors import FallbackWarning

store = ArtifactStorage(sys.argv[1] + "/artifacts", sys.argv[1] + "/cache")
frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = store.save("0" * 32, "frame", frame)
    second = store.save("0" * 32, "series", frame["a"])
said = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
assert len(said) == 1, said
assert "pip install 'clearnb[pandas]'" in said[0], said
assert (first.codec, second.codec) == ("pickle", "pickle"), (first.codec, second.codec)
assert store.load(first).equals(frame) and store.load(second).equals(frame["a"])
print("ok")
"""


def test_pandas_objects_are_pickled_with_one_warning_where_pyarrow_is_missing(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYARROW, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_small_dict_is_previewed_with_its_values() -> None:
    from clearnb.artifacts.codecs import JsonCodec

    codec = JsonCodec()
    assert codec.preview({"n": 3}) == '{"n": 3}'
    assert codec.preview({f"k{i}": "x" * 20 for i in range(1)}) == '{"k0": "xxxxxxxxxxxxxxxxxxxx"}'
    long = {"text": "y" * 100}
    assert codec.preview(long) == "dict with 1 key: text"
