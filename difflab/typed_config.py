"""Dataclass configs from plain dicts (TOML tables), checked: the one place that refuses unknown
keys (listing the valid ones) and values of the wrong type, for the Trainer's config and every
recipe's options alike."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args, get_origin, get_type_hints


def check_value(name: str, value: Any, annotation: Any, source: str) -> Any:
    """``value`` as the type ``annotation`` asks (an int is accepted for a float, a list for a
    tuple); a TypeError naming the field, the expected type and the value otherwise."""
    origin = get_origin(annotation)
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"{source}: {name} must be a list, got {value!r} ({type(value).__name__})."
            )
        return tuple(value) if tuple in (origin, annotation) else list(value)
    allowed = [a for a in (get_args(annotation) or (annotation,)) if isinstance(a, type)]
    if type(None) in allowed and value is None:
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # TOML writes 1 for 1.0
    if any(
        isinstance(value, a) and not (a is not bool and isinstance(value, bool)) for a in allowed
    ):
        return value
    names = " or ".join(a.__name__ for a in allowed if a is not type(None))
    raise TypeError(
        f"{source}: {name} must be of type {names}, got {value!r} ({type(value).__name__})."
    )


def from_dict(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build the dataclass ``cls`` from ``values``, refusing unknown keys and wrong types."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))}. "
            f"Valid keys are: {', '.join(fields)}."
        )
    hints = get_type_hints(cls)
    return cls(**{k: check_value(k, v, hints[k], source) for k, v in values.items()})


def without_class_name(data: dict[str, Any], expected: str, what: str, source: str) -> dict:
    """A copy of a stored config without its ``_class_name``, which must be ``expected``; a
    ValueError saying what the file is not otherwise."""
    data = dict(data)
    kind = data.pop("_class_name", None)
    if kind != expected:
        raise ValueError(
            f"{source}: not a difflab {what} config (_class_name {kind!r}, expected {expected!r})"
        )
    return data
