"""typeguard's `@typechecked` instrumented at a function's first call rather than at import.

espnet2 decorates about 220 functions with typeguard's `@typechecked`, and typeguard 4
instruments each one when it is decorated by parsing and compiling the function's whole module
again (typeguard issue 468, inflect issue 212): about 10-13 s of the ~24 s a process spends
importing espnet2's ASR task on a 2-core machine, paid by every process that imports espnet2
(each stage's `cvasr` command, each training process), though a run calls few of those
functions (`bench/import_time.py` measures it). `defer_typeguard_instrumentation`, called by
`import cvasr`, replaces `typeguard.typechecked` with `typechecked_on_first_call`: the same
instrumentation, the same checks and errors, done on the first call of each function instead.

Targets for which instrumenting later could differ keep typeguard's own decorator: classes,
functions defined inside functions (typeguard looks up their new free variables in the frame
that decorates them), generator and coroutine functions (their wrapper would no longer look like
one to `inspect`), functions already wrapped, calls with options, and `python -O` (where
typeguard does nothing anyway).
"""

from __future__ import annotations

import functools
import inspect
from types import ModuleType
from typing import Any, Callable

from cvasr.import_hooks import after_import

#: typeguard's own decorator, once replaced
_EAGER: list[Callable[..., Any]] = []


def _deferrable(target: Any) -> bool:
    return (__debug__ and inspect.isfunction(target)
            and "<locals>" not in target.__qualname__
            and not hasattr(target, "__wrapped__")
            and not (inspect.isgeneratorfunction(target) or inspect.iscoroutinefunction(target)
                     or inspect.isasyncgenfunction(target)))


def typechecked_on_first_call(target: Any = None, **options: Any) -> Any:
    """typeguard's `typechecked`, applied to `target` when it is first called (see the module's
    docstring for the targets it applies to at once, as typeguard does)."""
    eager = _EAGER[0]
    if target is None or options or not _deferrable(target):
        return eager(target, **options)
    instrumented: list[Callable[..., Any]] = []  # two threads may both instrument: harmless

    @functools.wraps(target)
    def first_call(*args: Any, **kwargs: Any) -> Any:
        if not instrumented:
            instrumented.append(eager(target))
        return instrumented[0](*args, **kwargs)

    return first_call


def _replace_decorator(typeguard: ModuleType) -> None:
    if typeguard.typechecked is typechecked_on_first_call:
        return
    _EAGER[:] = [typeguard.typechecked]
    typeguard.typechecked = typechecked_on_first_call


def defer_typeguard_instrumentation() -> None:
    """From now on, or from typeguard's import on, `from typeguard import typechecked` gives
    `typechecked_on_first_call`; modules that imported it before keep typeguard's."""
    after_import("typeguard", _replace_decorator)
