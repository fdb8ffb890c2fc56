"""Finding tasks with ClearML's filters: ``Task.get_tasks`` and ``Task.get_task``.

``project_name`` is one name or several, matched exactly; ``task_name`` is a regular
expression that may match part of the name (``^name$`` for the whole of it), as ClearML
documents; ``tags`` is ClearML's tag filter. ``task_filter`` takes ClearML's keys:
``status`` (ClearML's status names or clearnb's), ``type``, ``parent``, ``id``, ``name``,
``project``, ``tags``, ``system_tags``, ``search_text``, ``_all_`` / ``_any_``,
``order_by``, ``page`` and ``page_size``. Keys that mean nothing without ClearML's server
(``user``, ``only_fields``, ...) are named in a :class:`~clearnb.errors.CompatibilityWarning`;
any other key is refused, naming those understood.

Tasks are never archived here, so ``allow_archived=False`` leaves every task in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from clearnb.compat import warn_unused
from clearnb.errors import ClearnbError
from clearnb.status import TASK_STATUSES
from clearnb.store import Store, TaskRecord
from clearnb.store.tags import TagFilter

__all__ = ["ORDER_FIELDS", "STATUS_NAMES", "find_tasks"]

STATUS_NAMES = {
    **{status: status for status in TASK_STATUSES},
    "in_progress": "running",
    "stopped": "aborted",
}
"""ClearML's status names (and clearnb's own) to the status they select here."""
UNREACHED_STATUSES = frozenset({"published", "publishing", "closed", "unknown"})
"""ClearML statuses no clearnb task ever has: asking for them selects nothing."""
ORDER_FIELDS: dict[str, Callable[[TaskRecord], Any]] = {
    "id": lambda r: r.id,
    "name": lambda r: r.name,
    "project": lambda r: r.project,
    "project.name": lambda r: r.project,
    "status": lambda r: r.status,
    "type": lambda r: r.task_type,
    "comment": lambda r: r.comment,
    "parent": lambda r: r.parent,
    "created": lambda r: r.created,
    "started": lambda r: r.started,
    "completed": lambda r: r.completed,
    "last_update": lambda r: r.last_update,
    "last_change": lambda r: r.last_update,
}
"""Fields ``order_by`` sorts on, as ClearML names them."""
TEXT_FIELDS: dict[str, Callable[[TaskRecord], Any]] = {
    **ORDER_FIELDS,
    "tags": lambda r: " ".join(r.tags),
    "notebook": lambda r: r.notebook,
    "script.entry_point": lambda r: r.notebook,
}
"""Fields ``_all_`` and ``_any_`` match their pattern against."""
WITHOUT_MEANING = {
    "user": "tasks have no owner here",
    "only_fields": "whole tasks are returned",
    "search_hidden": "no task is hidden here",
    "_allow_extra_fields_": "there is no server request to extend",
    "include_subprojects": "projects are plain names here",
}
"""``task_filter`` keys of ClearML that have no meaning here, with why."""
UNDERSTOOD = frozenset(
    {
        "status",
        "type",
        "parent",
        "id",
        "name",
        "project",
        "tags",
        "system_tags",
        "search_text",
        "_all_",
        "_any_",
        "order_by",
        "page",
        "page_size",
    }
)


def find_tasks(
    store: Store,
    task_ids: str | Sequence[str] | None = None,
    project_name: str | Sequence[str] | None = None,
    task_name: str | None = None,
    tags: str | Sequence[str] | None = None,
    allow_archived: bool = True,
    task_filter: Mapping[str, Any] | None = None,
    *,
    exact_name: bool = False,
    where: str = "Task.get_tasks",
) -> list[TaskRecord]:
    """The tasks matching ClearML's filters (see the module), newest first unless
    ``order_by`` says otherwise. ``task_ids`` alone picks those tasks, in that order.
    ``exact_name`` matches ``task_name`` as a whole name (``Task.get_task``'s way)."""
    if task_ids:
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        return [store.get_task(task_id) for task_id in ids]
    options = dict(task_filter or {})
    unused = {key: options.pop(key) for key in list(options) if key in WITHOUT_MEANING}
    warn_unused(where, unused, "; ".join(WITHOUT_MEANING[key] for key in unused), stacklevel=4)
    unknown = sorted(set(options) - UNDERSTOOD)
    if unknown:
        raise ClearnbError(
            f"{where}: task_filter key(s) {', '.join(map(repr, unknown))} are not understood; "
            f"it takes: {', '.join(sorted(UNDERSTOOD | set(WITHOUT_MEANING)))}",
            keys=unknown,
        )
    statuses = _statuses(options.get("status"))
    if statuses == []:
        return []
    types = _listed(options.get("type"))
    projects = _listed(project_name) or _listed(options.get("project"))
    name = task_name or options.get("name")
    wanted_ids = set(_listed(options.get("id")))
    all_tags = [*_listed(tags), *_listed(options.get("tags"))]
    system_tags = TagFilter.parse(_listed(options.get("system_tags")))
    records = store.find_tasks(
        project=projects[0] if len(projects) == 1 else None,
        name=name if exact_name and name else None,
        status=statuses,
        task_type=types[0] if len(types) == 1 else None,
        tags=all_tags or None,
        parent=options.get("parent"),
    )
    checks: list[Callable[[TaskRecord], bool]] = []
    if len(projects) > 1:
        checks.append(lambda r: r.project in projects)
    if len(types) > 1:
        checks.append(lambda r: r.task_type in types)
    if wanted_ids:
        checks.append(lambda r: r.id in wanted_ids)
    if name and not exact_name:
        pattern = _pattern(name, "task_name")
        checks.append(lambda r: pattern.search(r.name) is not None)
    if system_tags is not None:  # a task has no system tags here
        checks.append(lambda r: system_tags.matches(()))
    if options.get("search_text"):
        text = str(options["search_text"]).lower()
        checks.append(lambda r: any(text in (v or "").lower() for v in (r.name, r.comment, r.id)))
    for key, combine in (("_all_", all), ("_any_", any)):
        if options.get(key):
            checks.append(_field_pattern(options[key], key, combine))
    found = [r for r in records if all(check(r) for check in checks)]
    found = _ordered(found, _listed(options.get("order_by")))
    return _page(found, options.get("page"), options.get("page_size"))


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [str(value)]  # a TaskTypes member is its name
    if isinstance(value, Iterable):
        return [str(item) for item in value]
    return [str(value)]


def _statuses(value: Any) -> list[str] | None:
    """The clearnb statuses ``status`` selects (None: any; empty: none)."""
    names = _listed(value)
    if not names:
        return None
    unknown = [n for n in names if n not in STATUS_NAMES and n not in UNREACHED_STATUSES]
    if unknown:
        valid = sorted({*STATUS_NAMES, *UNREACHED_STATUSES})
        raise ClearnbError(
            f"Unknown task status {', '.join(map(repr, unknown))}; a status is one of: "
            + ", ".join(valid),
            status=unknown,
        )
    return sorted({STATUS_NAMES[n] for n in names if n in STATUS_NAMES})


def _pattern(text: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ClearnbError(
            f"{what} {text!r} is not a regular expression ({exc}); use re.escape(...) to "
            "match it literally",
            pattern=text,
        ) from exc


def _field_pattern(
    spec: Any, key: str, combine: Callable[[Iterable[bool]], bool]
) -> Callable[[TaskRecord], bool]:
    """The check of ``_all_`` / ``_any_``: ``{"fields": [...], "pattern": regex}``."""
    if not isinstance(spec, Mapping) or "pattern" not in spec:
        raise ClearnbError(
            f"task_filter[{key!r}] is a dict(fields=[...], pattern='regex'), not {spec!r}"
        )
    fields = _listed(spec.get("fields")) or ["name"]
    unknown = [f for f in fields if f not in TEXT_FIELDS]
    if unknown:
        raise ClearnbError(
            f"task_filter[{key!r}] names field(s) {', '.join(map(repr, unknown))} a task does "
            f"not have here; it matches: {', '.join(TEXT_FIELDS)}",
            fields=unknown,
        )
    pattern = _pattern(str(spec["pattern"]), f"task_filter[{key!r}] pattern")
    getters = [TEXT_FIELDS[f] for f in fields]
    return lambda r: combine(pattern.search(str(get(r) or "")) is not None for get in getters)


def _ordered(records: list[TaskRecord], order_by: list[str]) -> list[TaskRecord]:
    """``records`` sorted by ClearML's ``order_by`` (``"-field"`` descending); a missing
    value sorts before every other, as ClearML's server sorts it."""
    unknown = [f for f in order_by if f.lstrip("-+") not in ORDER_FIELDS]
    if unknown:
        raise ClearnbError(
            f"task_filter['order_by'] names field(s) {', '.join(map(repr, unknown))} tasks "
            f"cannot be ordered by here; they can by: {', '.join(ORDER_FIELDS)}",
            fields=unknown,
        )
    for field in reversed(order_by):  # stable sorts, least significant key first
        get = ORDER_FIELDS[field.lstrip("-+")]
        records = sorted(
            records,
            key=lambda r: (get(r) is not None, get(r) if get(r) is not None else 0),
            reverse=field.startswith("-"),
        )
    return records


def _page(records: list[TaskRecord], page: Any, page_size: Any) -> list[TaskRecord]:
    """Page ``page`` (from 0) of ``page_size`` tasks; all of them when neither is given."""
    if page is None and page_size is None:
        return records
    size = int(page_size) if page_size is not None else 500  # ClearML's page size
    number = int(page) if page is not None else 0
    if size < 1 or number < 0:
        raise ClearnbError(f"page must be 0 or more and page_size 1 or more, not {page}/{size}")
    return records[number * size : (number + 1) * size]
