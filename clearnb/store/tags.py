"""ClearML's tag filters, shared by the task and model queries of the store.

A filter is a list of tags: by default an item matches if it has any of them; a first
element ``"__$all"`` asks for all of them instead (``"__$any"`` says the default out loud);
``"-tag"``, or ``"__$not"`` followed by ``tag``, excludes items that have ``tag``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALL_TAGS = "__$all"
ANY_TAGS = "__$any"
NOT_TAG = "__$not"


@dataclass(frozen=True)
class TagFilter:
    """Any (default) or all of ``wanted``, and none of ``excluded``."""

    wanted: frozenset[str]
    excluded: frozenset[str]
    require_all: bool

    @classmethod
    def parse(cls, tags: str | Iterable[str] | None) -> TagFilter | None:
        """The filter ``tags`` describe, or None when they ask for nothing."""
        if tags is None:
            return None
        items = [tags] if isinstance(tags, str) else list(tags)
        require_all = False
        if items and items[0] in (ALL_TAGS, ANY_TAGS):
            require_all = items.pop(0) == ALL_TAGS
        wanted: set[str] = set()
        excluded: set[str] = set()
        negate_next = False
        for tag in items:
            if tag == NOT_TAG:
                negate_next = True
            elif negate_next or tag.startswith("-"):
                excluded.add(tag if negate_next else tag[1:])
                negate_next = False
            else:
                wanted.add(tag)
        if not wanted and not excluded:
            return None
        return cls(frozenset(wanted), frozenset(excluded), require_all)

    def matches(self, tags: Iterable[str]) -> bool:
        """Whether an item with ``tags`` passes the filter."""
        have = set(tags)
        if have & self.excluded:
            return False
        if not self.wanted:
            return True
        if self.require_all:
            return self.wanted <= have
        return bool(self.wanted & have)
