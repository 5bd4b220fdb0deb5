"""The base of every structured-config dataclass: range rules declared on the schema itself.

Types and key names are checked by Hydra when the config is composed. What a type cannot say
(``batch_size >= 1``, ``0 <= gamma <= 1``) each schema says in ``rules``, next to its fields, so
that one rule serves wherever the schema is used: ``algo``, ``macs.algo`` and ``expert.algo``
are all checked by the rules of their agent's schema, and ``check`` names the failing value by
its full key (``macs.algo.gamma``), known only where the config is walked from the root.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import OmegaConf

S = TypeVar("S")


class UserError(Exception):
    """A mistake the user can fix (a bad value, missing data): reported as its message alone,
    with no traceback, and exit status 2."""


class ConfigError(UserError, ValueError):
    """A config value no run could use; the message names the full key and what it must be."""


class ResumeError(UserError):
    """A run that cannot be resumed as asked (``trainer.resume``): no checkpoint, a changed
    config, a run the tracking store does not hold."""


Rules = dict[str, tuple[bool, str]]


class Schema:
    """Mixin for config dataclasses: ``rules`` maps a field name to (holds, what it must be)."""

    def rules(self) -> Rules:
        return {}


def check(node: Any, prefix: str) -> None:
    """Checks ``node`` and every schema nested in it, depth first, raising ``ConfigError`` for
    the first rule that fails; ``prefix`` is the node's key (``algo``, ``macs.algo``)."""
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        return
    for field in dataclasses.fields(node):
        check(getattr(node, field.name), f"{prefix}.{field.name}" if prefix else field.name)
    if isinstance(node, Schema):
        for key, (holds, expected) in node.rules().items():
            if not holds:
                full = f"{prefix}.{key}" if prefix else key
                value = getattr(node, key, None)
                raise ConfigError(f"{full}={_shown(value)} is invalid: it must be {expected}")


def _shown(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        # A nested schema (an agent under macs.algo) is shown by the option that chose it.
        return str(getattr(value, "name", type(value).__name__))
    return str(value).replace(" ", "") if isinstance(value, list) else str(value)


def as_schema(node: Any, schema: type[S]) -> S:
    """One config node as its schema's object (``cfg.tracking`` as a ``TrackingConfig``), for
    the code that must read part of a config that as a whole may not be valid (a failed job)."""
    obj = OmegaConf.to_object(node)
    if not isinstance(obj, schema):
        raise TypeError(f"expected a {schema.__name__} node, got {type(obj).__name__}")
    return obj
