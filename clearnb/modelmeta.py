"""What describes a model: ClearML's framework names, its design text and metadata entries.

ClearML keeps a metadata value as text with the name of its type, and casts it back on
request; the functions here do the same for :mod:`clearnb.model`.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

from clearnb.errors import ModelError

__all__ = ["METADATA_TYPES", "Framework", "cast_metadata", "design_text", "metadata_entry"]

METADATA_TYPES = ("float", "int", "bool", "str", "basestring", "list", "tuple", "dict")
"""The value types ClearML records with a metadata entry (any other is ``None``)."""


class Framework:
    """Names of model frameworks, as ClearML spells them (a model's ``framework``)."""

    tensorflow = "TensorFlow"
    tensorflowjs = "TensorFlow_js"
    tensorflowlite = "TensorFlow_Lite"
    pytorch = "PyTorch"
    torchscript = "TorchScript"
    caffe = "Caffe"
    caffe2 = "Caffe2"
    onnx = "ONNX"
    keras = "Keras"
    mknet = "MXNet"
    cntk = "CNTK"
    torch = "Torch"
    darknet = "Darknet"
    paddlepaddle = "PaddlePaddle"
    scikitlearn = "ScikitLearn"
    xgboost = "XGBoost"
    lightgbm = "LightGBM"
    parquet = "Parquet"
    megengine = "MegEngine"
    catboost = "CatBoost"
    tensorrt = "TensorRT"
    openvino = "OpenVINO"


def design_text(config_text: str | None, config_dict: Mapping[str, Any] | None) -> str | None:
    """The design text of ``config_text`` or ``config_dict`` (as JSON); one at most."""
    if config_text is not None and config_dict is not None:
        raise ModelError("Give the model's config_text or config_dict, not both.")
    if config_dict is not None:
        return json.dumps(dict(config_dict), indent=2, default=str)
    return config_text


def cast_metadata(value: str | None, kind: str | None) -> Any:
    """A metadata value read back as its recorded type, as ClearML casts it."""
    if value is None or kind in (None, "None", ""):
        return None if value == "" else value
    try:
        if kind in ("list", "tuple", "dict"):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = ast.literal_eval(value)
            return {"list": list, "tuple": tuple, "dict": dict}[kind](parsed)
        if kind == "bool":
            return value.strip().lower() in ("true", "1", "yes", "y", "on")
        if kind in ("str", "basestring"):
            return value
        return {"int": int, "float": float}[kind](value)
    except (ValueError, TypeError, SyntaxError, KeyError):
        return value


def metadata_entry(key: Any, value: Any, v_type: Any) -> dict[str, str]:
    kind = str(v_type) if str(v_type) in METADATA_TYPES else "None"
    if kind in ("list", "tuple", "dict") and not isinstance(value, str):
        text = json.dumps(list(value) if kind == "tuple" else value, default=str)
    else:
        text = str(value)
    return {"key": str(key), "value": text, "type": kind}
