"""Placeholders for the results of pipeline components, until the components have run.

Inside a running decorated pipeline, calling a component returns a :class:`LazyValue` per
return value at once. Passing one to another component passes a reference
(``${step.name}``) and makes that component a child, without waiting; using one (printing
it, arithmetic, ``if``) waits for the component and uses its stored value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class ValueSource(Protocol):
    """Where a placeholder's value comes from: the run of the pipeline that made it."""

    def value(self, step: str, name: str) -> Any:
        """The value ``name`` that ``step`` returned (waits until the step has run)."""
        ...


class LazyValue:
    """A component's return value that exists once the component has run.

    Using it waits for the component; passing it to another component does not.
    """

    __slots__ = ("_clearnb_name", "_clearnb_run", "_clearnb_step")

    def __init__(self, run: ValueSource, step: str, name: str) -> None:
        object.__setattr__(self, "_clearnb_run", run)
        object.__setattr__(self, "_clearnb_step", step)
        object.__setattr__(self, "_clearnb_name", name)

    def _clearnb_value(self) -> Any:
        return self._clearnb_run.value(self._clearnb_step, self._clearnb_name)

    @property
    def reference(self) -> str:
        """The ``${step.name}`` reference to this value."""
        return "${" + f"{self._clearnb_step}.{self._clearnb_name}" + "}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clearnb_value(), name)

    def __repr__(self) -> str:
        return repr(self._clearnb_value())

    def __str__(self) -> str:
        return str(self._clearnb_value())

    def __format__(self, spec: str) -> str:
        return format(self._clearnb_value(), spec)

    def __bool__(self) -> bool:
        return bool(self._clearnb_value())

    def __len__(self) -> int:
        return len(self._clearnb_value())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._clearnb_value())

    def __getitem__(self, key: Any) -> Any:
        return self._clearnb_value()[key]

    def __contains__(self, item: Any) -> bool:
        return item in self._clearnb_value()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._clearnb_value()(*args, **kwargs)

    def __hash__(self) -> int:
        return hash(self._clearnb_value())

    def __float__(self) -> float:
        return float(self._clearnb_value())

    def __int__(self) -> int:
        return int(self._clearnb_value())

    def __index__(self) -> int:
        return operator.index(self._clearnb_value())


def _unary(name: str) -> Callable[[LazyValue], Any]:
    function = getattr(operator, name)

    def method(self: LazyValue) -> Any:
        return function(self._clearnb_value())

    method.__name__ = f"__{name}__"
    return method


def _forward(name: str, reflected: bool = False) -> Callable[..., Any]:
    function = getattr(operator, name)

    def method(self: LazyValue, other: Any) -> Any:
        value = self._clearnb_value()
        other = plain_value(other)
        return function(other, value) if reflected else function(value, other)

    method.__name__ = f"__r{name.strip('_')}__" if reflected else f"__{name.strip('_')}__"
    return method


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul"):
    setattr(LazyValue, f"__{_op}__", _forward(_op))
    setattr(LazyValue, f"__r{_op}__", _forward(_op, reflected=True))
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(LazyValue, f"__{_op}__", _forward(_op))
for _op in ("neg", "pos", "abs"):
    setattr(LazyValue, f"__{_op}__", _unary(_op))


def plain_value(value: Any) -> Any:
    """``value`` itself, or what a placeholder stands for (waiting for it)."""
    return value._clearnb_value() if isinstance(value, LazyValue) else value


def resolved(value: Any) -> Any:
    """``value`` with every placeholder inside a list, tuple, set or dict replaced by what
    it stands for (waiting for those components), as ClearML does when it stores such an
    argument; a value with no placeholder inside is returned as it is."""
    if isinstance(value, LazyValue):
        return value._clearnb_value()
    if isinstance(value, list | tuple | set | frozenset):
        items = [resolved(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else type(value)(items)
    if isinstance(value, dict):
        pairs = {key: resolved(item) for key, item in value.items()}
        if all(pairs[key] is item for key, item in value.items()):
            return value
        return pairs
    return value
