"""typeguard's instrumentation deferred to the first call (cvasr.deferred_typechecks) checks what
typeguard checks, with the same errors (oracle: the same module decorated by typeguard's own
decorator), leaves the targets it cannot defer to typeguard, and reaches espnet2's functions;
and the import hook it rides on (cvasr.import_hooks) runs its callback once, at the right time."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import typeguard

import cvasr  # noqa: F401  (installs the deferred decorator)
from cvasr import deferred_typechecks
from cvasr.import_hooks import after_import

MODULE = '''
from typeguard import typechecked


@typechecked
def scale(x: int, by: float = 2.0) -> float:
    return x * by


class Box:
    @typechecked
    def __init__(self, size: int) -> None:
        self.size = size


@typechecked
def count(n: int):
    yield from range(n)


def make_adder(k: int):
    @typechecked
    def add(x: int) -> int:
        return x + k
    return add
'''

INSTRUMENTED = "check_argument_types_internal"  # what typeguard's instrumented code calls


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # typeguard reads the source through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def deferred_and_eager(tmp_path: Path):
    path = tmp_path / "checked_mod.py"
    path.write_text(MODULE)
    assert typeguard.typechecked is deferred_typechecks.typechecked_on_first_call
    deferred = _load(path, "checked_mod_deferred")
    typeguard.typechecked = deferred_typechecks._EAGER[0]
    try:
        eager = _load(path, "checked_mod_eager")
    finally:
        typeguard.typechecked = deferred_typechecks.typechecked_on_first_call
    yield deferred, eager
    for name in ("checked_mod_deferred", "checked_mod_eager"):
        sys.modules.pop(name, None)


def _error(call) -> str:
    with pytest.raises(typeguard.TypeCheckError) as caught:
        call()
    return str(caught.value)


def test_deferred_functions_check_and_fail_as_typeguard_does(deferred_and_eager) -> None:
    deferred, eager = deferred_and_eager
    # not instrumented when decorated; typeguard's are
    assert INSTRUMENTED not in deferred.scale.__wrapped__.__code__.co_names
    assert INSTRUMENTED in eager.scale.__code__.co_names
    assert inspect.signature(deferred.scale) == inspect.signature(eager.scale)
    assert deferred.scale(3) == eager.scale(3) == 6.0
    assert _error(lambda: deferred.scale("3")) == _error(lambda: eager.scale("3")) == \
        'argument "x" (str) is not an instance of int'
    assert deferred.Box(4).size == 4
    assert _error(lambda: deferred.Box(4.5)) == _error(lambda: eager.Box(4.5))


def test_what_cannot_wait_is_instrumented_by_typeguard_at_once(deferred_and_eager) -> None:
    deferred, eager = deferred_and_eager
    assert inspect.isgeneratorfunction(deferred.count) and not hasattr(deferred.count,
                                                                        "__wrapped__")
    assert INSTRUMENTED in deferred.count.__code__.co_names
    assert list(deferred.count(3)) == [0, 1, 2]
    add = deferred.make_adder(1)  # a closure: typeguard reads `k` from the decorating frame
    assert INSTRUMENTED in add.__code__.co_names and add(2) == 3
    assert _error(lambda: add("2")) == _error(lambda: eager.make_adder(1)("2"))


def test_espnet2s_functions_are_deferred_and_still_checked() -> None:
    code = ("import cvasr, espnet2.text.cleaner as c, typeguard\n"
            "init = c.TextCleaner.__init__\n"
            "assert hasattr(init, '__wrapped__'), 'not deferred'\n"
            "print(c.TextCleaner(['tacotron'])('&  jr.'))\n"
            "try:\n"
            "    c.TextCleaner(cleaner_types=123)\n"
            "except typeguard.TypeCheckError as e:\n"
            "    print('TypeCheckError', str(e).splitlines()[0])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == [
        "AND JUNIOR",
        'TypeCheckError argument "cleaner_types" (int) did not match any element in the union:']


def test_after_import_calls_back_once_after_the_module_has_run(tmp_path: Path,
                                                                monkeypatch) -> None:
    (tmp_path / "late_mod.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def callback(module) -> None:
        seen.append(module.VALUE)

    after_import("late_mod", callback)
    after_import("late_mod", callback)  # the same hook twice: one finder
    assert seen == []
    import late_mod  # noqa: F401
    assert seen == [7]
    after_import("late_mod", callback)  # already imported: at once
    assert seen == [7, 7]
    sys.modules.pop("late_mod", None)
