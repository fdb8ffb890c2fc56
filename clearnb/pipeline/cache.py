"""Cache keys: a step whose code, parameters and inputs are unchanged need not run again.

The key hashes the step's code (the notebook's code cells, or the generated notebook of a
function step), its parameters with every ``${...}`` reference replaced by the *content*
it stands for (an artifact by its sha256, a step's id by the hashes of that step's
artifacts) and the values of pipeline parameters. Re-running a parent that produces the
same artifacts therefore keeps its children cached, even though its task id changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from clearnb.pipeline import references
from clearnb.pipeline.references import Reference

KEY_VERSION = "1"


def cache_key(
    code_hash: str,
    parameters: Mapping[str, Any],
    content_of: Callable[[Reference], Any],
) -> str:
    """sha256 of the code hash and the parameters with references replaced by content."""
    canonical = {key: references.substitute(value, content_of) for key, value in parameters.items()}
    payload = json.dumps(
        {"v": KEY_VERSION, "code": code_hash, "parameters": canonical},
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def artifacts_digest(hashes: Mapping[str, str]) -> str:
    """One digest of a task's artifacts (by name and sha256)."""
    payload = json.dumps(sorted(hashes.items()))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
