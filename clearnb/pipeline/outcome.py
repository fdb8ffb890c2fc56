"""Whether a pipeline run succeeded, in ClearML's terms (``is_successful``).

``fail_condition`` says which kind of end counts as a failure: ``"all"`` (a failed or an
aborted pipeline), ``"failed"`` (only a failed one: an aborted run is a success) or
``"aborted"`` (only an aborted one). With ``fail_on_step_fail`` the steps are judged the
same way as the pipeline's own status; a step whose failure (or abort) the pipeline allows
(``continue_on_fail``, ``continue_behaviour``) and a skipped or cached step never count.
"""

from __future__ import annotations

from collections.abc import Iterable

from clearnb.errors import PipelineError
from clearnb.pipeline.node import Node
from clearnb.status import ABORTED, CACHED, COMPLETED, FAILED, SKIPPED

FAIL_CONDITIONS = {
    "all": frozenset({COMPLETED}),
    "failed": frozenset({COMPLETED, ABORTED}),
    "aborted": frozenset({COMPLETED, FAILED}),
}
"""For each ``fail_condition``, the statuses that count as a success."""


def successful(
    status: str, nodes: Iterable[Node], fail_on_step_fail: bool, fail_condition: str
) -> bool:
    """True if a run that ended ``status`` with ``nodes`` succeeded under
    ``fail_condition``; a run still going on (or not started) never has."""
    if fail_condition not in FAIL_CONDITIONS:
        raise PipelineError(
            f"fail_condition must be one of {', '.join(map(repr, FAIL_CONDITIONS))}, "
            f"not {fail_condition!r}"
        )
    allowed = FAIL_CONDITIONS[fail_condition]
    if status not in allowed:
        return False
    if not fail_on_step_fail:
        return True
    for node in nodes:
        step, ended = node.spec, node.run.status
        if ended in (COMPLETED, CACHED, SKIPPED):
            continue
        if (ended == FAILED and step.continue_on_fail) or (
            ended == ABORTED and step.continue_on_abort
        ):
            continue
        if ended not in allowed:
            return False
    return True
