"""The values of a training config, checked at stage 3 rather than discovered in stage 4.

espnet2 takes a YAML config's values as they are, without the type conversion its command line
gets, so `lr: "fast"` (or `lr: 3e-4`, which YAML reads as text) passes collect-stats and fails
minutes into stage 4 with a torch TypeError that names no key. Here every value is checked
against what espnet2's parser declares for the option (its type, its choices) and every
`*_conf` mapping against the signature of the class it configures (the optimizer, the
scheduler, the frontend, the encoder, ...), the annotations read as those classes state them and
checked with typeguard, which espnet2 itself uses. A problem is one line naming the key.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import typing
from typing import Any, Iterator

#: YAML 1.1 (PyYAML) reads an exponent without a dot as text: 3e-4 is a string, 3.0e-4 a number
_EXPONENT_TEXT = re.compile(r"[-+]?(\d+|\d+\.\d*|\.\d+)[eE][-+]?\d+")


def _value_text(value: Any) -> str:
    text = f"{type(value).__name__} {value!r}"
    if isinstance(value, str) and _EXPONENT_TEXT.fullmatch(value):
        number = re.sub(r"^([-+]?\d+)([eE])", r"\1.0\2", value)
        text += f" (YAML reads {value} as text: write it with a dot, e.g. {number})"
    return text


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or repr(annotation).replace("typing.", "")


def _scalar_problem(key: str, value: Any, kind: str) -> str | None:
    """Checks for espnet2's option types (espnet2.utils.types and builtins) by name."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    ok = {"int": is_int, "float": is_number, "str2bool": isinstance(value, bool),
          "int_or_none": is_int or value is None,
          "float_or_none": is_number or value is None,
          "str_or_none": isinstance(value, str) or value is None,
          "str_or_int": isinstance(value, str) or is_int,
          "str2bool_or_auto": isinstance(value, bool) or value == "auto"}.get(kind)
    if ok is None or ok:
        return None
    want = {"int": "a whole number", "float": "a number", "str2bool": "true or false",
            "int_or_none": "a whole number or null", "float_or_none": "a number or null",
            "str_or_none": "text or null", "str_or_int": "text or a whole number",
            "str2bool_or_auto": "true, false or auto"}[kind]
    return f"{key} must be {want}, got {_value_text(value)}"


def _option_problems(key: str, value: Any, action: argparse.Action) -> Iterator[str]:
    kind = getattr(action.type, "__name__", "")
    if action.choices is not None:
        name = value.lower() if isinstance(value, str) and kind == "<lambda>" else value
        if name not in action.choices:
            choices = ", ".join(str(c) for c in action.choices)
            yield f"{key} must be one of {choices}; got {_value_text(value)}"
        return
    if action.__class__.__name__ == "NestedDictAction":
        if value is not None and not isinstance(value, dict):
            yield f"{key} must be a mapping (key: value lines), got {_value_text(value)}"
        return
    if kind == "str2triple_str":
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not (isinstance(item, (list, tuple)) and len(item) == 3
                    and all(isinstance(x, str) for x in item)):
                yield f"{key} must be a list of [phase, statistic, min|max] triples, got " \
                      f"{_value_text(item)}"
                return
        return
    if action.nargs in ("+", "*") and isinstance(value, list):
        for item in value:
            if (problem := _scalar_problem(key, item, kind)) is not None:
                yield problem
                return
        return
    if (problem := _scalar_problem(key, value, kind)) is not None:
        yield problem


def class_parameters(cls: type) -> tuple[dict[str, Any], bool]:
    """The keyword options `cls(...)` takes with their annotations, following **kwargs up the
    classes it inherits from; and whether it takes any other keyword (an open **kwargs)."""
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return params, True
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):
            return params, True
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation naming what cannot be imported: no types, names only
            hints = {}
        open_kwargs = False
        for name, p in signature.parameters.items():
            if name == "self" or p.kind == p.VAR_POSITIONAL:
                continue
            if p.kind == p.VAR_KEYWORD:
                open_kwargs = True
                continue
            params.setdefault(name, hints.get(name, inspect.Parameter.empty))
        if not open_kwargs:
            return params, False
    return params, True


def _conf_problems(key: str, conf: dict[str, Any], cls: type) -> Iterator[str]:
    from typeguard import TypeCheckError, check_type

    params, open_kwargs = class_parameters(cls)
    for name, value in conf.items():
        where = f"{key}.{name}"
        if name not in params:
            if not open_kwargs:
                close = difflib.get_close_matches(str(name), list(params), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                yield f"unknown key '{where}': {cls.__name__} has no option '{name}'{hint}"
            continue
        annotation = params[name]
        if annotation is inspect.Parameter.empty:
            continue
        candidates = [value, tuple(value)] if isinstance(value, list) else [value]
        for candidate in candidates:  # YAML has lists where classes declare tuples
            try:
                check_type(candidate, annotation)
                break
            except TypeCheckError:
                continue
            except Exception:  # an annotation typeguard cannot check: leave it to the class
                break
        else:
            yield f"{where} must be {_type_text(annotation)} (as {cls.__name__} declares), got " \
                  f"{_value_text(value)}"


def config_problems(conf: dict[str, Any], parser: argparse.ArgumentParser,
                    class_choices: list[Any], optim_classes: dict[str, type],
                    scheduler_classes: dict[str, type]) -> list[str]:
    """Every problem with the values of `conf` (whose keys are known options), one line each."""
    actions = {a.dest: a for a in parser._actions}
    problems: list[str] = []
    for key, value in conf.items():
        if key in actions:
            problems += _option_problems(str(key), value, actions[key])
    if problems:  # the class choices themselves are wrong: their *_conf cannot be checked
        return problems

    def chosen(name: str) -> Any:
        value = conf.get(name, actions[name].default if name in actions else None)
        return value.lower() if isinstance(value, str) else value

    confs: list[tuple[str, type | None]] = [
        ("optim_conf", optim_classes.get(chosen("optim"))),
        ("scheduler_conf", scheduler_classes.get(chosen("scheduler")))]
    for choices in class_choices:
        name = chosen(choices.name)
        confs.append((f"{choices.name}_conf", choices.classes.get(name) if name else None))
    for key, cls in confs:
        sub = conf.get(key)
        if cls is not None and isinstance(sub, dict):
            problems += _conf_problems(key, sub, cls)
    return problems


def task_config_problems(conf: dict[str, Any]) -> list[str]:
    """`config_problems` with espnet2's ASR task as stage 4 runs it (cvasr.training.task)."""
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    from cvasr.training.task import CvasrASRTask

    return config_problems(conf, CvasrASRTask.get_parser(), CvasrASRTask.class_choices_list,
                           optim_classes, scheduler_classes)
