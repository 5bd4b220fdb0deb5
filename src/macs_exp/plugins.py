"""The one registry of plug-ins: recommender agents (the ``algo`` group) and training modes (the
``mode`` group, each an augmenter).

A plug-in is a module that registers itself with ``@agent`` or ``@mode``, naming the option it
serves and its config schema; ``discover`` imports every module of the plug-in packages, so a
new algorithm or mode is its module plus its YAML file, and nothing else is edited. The app
exposes each schema to the YAML as ``/schema/algo/<name>`` or ``/schema/mode/<name>``, the
composition root builds what the chosen option names, and the reports take a mode's row
suffix and position from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from macs_exp.schema import ConfigError

# Where plug-ins live: every module of a package is imported by ``discover``, a module itself.
PLUGIN_HOMES = ("macs_exp.agents", "macs_exp.macs", "macs_exp.ctrl", "macs_exp.trainer.augmenter")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Plugin:
    name: str
    # The structured-config dataclass of its YAML group option.
    schema: type[Any]
    # Agents: the class, called as (cfg, observation_space, action_space, device, seed).
    # Modes: called as (context) and returns the augmenter (see ``macs_exp.trainer.augmenter``).
    factory: Callable[..., Any]
    # Where its rows come in tables and figures (the paper's: DDPG, SAC, TD3, then the
    # reference policies; baseline, -E, -J, then the ablations).
    order: int = 0
    # Modes only: the suffix of the mode's row in tables (``DDPG-E``).
    suffix: str = ""


AGENTS: dict[str, Plugin] = {}
MODES: dict[str, Plugin] = {}


def _register(table: dict[str, Plugin], plugin: Plugin) -> None:
    known = table.get(plugin.name)
    if known is not None and known.factory is not plugin.factory:
        raise RuntimeError(
            f"two plug-ins are registered as {plugin.name!r}: {known.factory} and {plugin.factory}"
        )
    table[plugin.name] = plugin


def agent(name: str, schema: type, *, order: int) -> Callable[[F], F]:
    """Registers an agent class as the ``algo=<name>`` option with its hyperparameter schema."""

    def register(cls: F) -> F:
        _register(AGENTS, Plugin(name, schema, cls, order))
        return cls

    return register


def mode(name: str, schema: type, *, suffix: str, order: int) -> Callable[[F], F]:
    """Registers an augmenter factory as the ``mode=<name>`` option."""

    def register(factory: F) -> F:
        _register(MODES, Plugin(name, schema, factory, order, suffix))
        return factory

    return register


_discovered = False


def discover() -> None:
    """Imports every plug-in module, which registers it; the folders are listed only once, so
    that reports may ask for row names and orders as often as they like."""
    global _discovered
    if _discovered:
        return
    for home in PLUGIN_HOMES:
        package = importlib.import_module(home)
        for module in pkgutil.iter_modules(getattr(package, "__path__", []), f"{home}."):
            importlib.import_module(module.name)
    _discovered = True


def agent_plugin(name: str) -> Plugin:
    discover()
    try:
        return AGENTS[name]
    except KeyError:
        raise ConfigError(f"algo.name={name!r} is unknown; choose one of {sorted(AGENTS)}") from None


def mode_plugin(name: str) -> Plugin:
    discover()
    try:
        return MODES[name]
    except KeyError:
        raise ConfigError(f"mode.name={name!r} is unknown; choose one of {sorted(MODES)}") from None


def in_order(table: dict[str, Plugin]) -> list[Plugin]:
    """The plug-ins of ``AGENTS`` or ``MODES`` in the order their rows are shown."""
    discover()
    return sorted(table.values(), key=lambda p: (p.order, p.name))
