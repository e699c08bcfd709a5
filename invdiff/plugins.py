"""Plugin manager and component registry.

Plugins are modules named by entry points in the ``invdiff`` group (see
:mod:`invdiff.hookspecs`). Built-in components (:mod:`invdiff.reference`) are registered through
the same manager. Loading is isolated per plugin: one that raises is skipped with a warning that
names it (``INVDIFF_STRICT_PLUGINS=1`` raises instead), so a broken third-party plugin never
breaks the tool.

Environment:

* ``INVDIFF_LOAD_PLUGINS``: comma-separated entry-point names to load (unset: all; empty: none).
* ``INVDIFF_STRICT_PLUGINS=1``: a plugin that fails to load raises :class:`PluginError`.

Nothing here imports torch: factories given as ``"module:attribute"`` strings are imported when a
component is built.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from invdiff import hookspecs
from invdiff.errors import ConfigError, PluginError, UnknownComponentError

ENTRY_POINT_GROUP = "invdiff"

#: kind -> hook name
HOOKS: dict[str, str] = {
    "prior": "register_priors",
    "forward_model": "register_forward_models",
    "noise_model": "register_noise_models",
    "score_net": "register_score_nets",
    "sampler": "register_samplers",
    "reference": "register_references",
    "metric": "register_metrics",
    "objective": "register_objectives",
}
KINDS = tuple(HOOKS)

#: Built-in plugin modules (plugin name -> module), registered like any entry point.
BUILTINS: dict[str, str] = {"reference": "invdiff.reference.plugin",
                             "training": "invdiff.training.plugin"}


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    params: type[BaseModel] | None
    help: str
    plugin: str

    def resolve_factory(self) -> Callable[..., Any]:
        """The factory callable, importing it if it was registered as a string."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise PluginError(
                f"plugin {self.plugin!r} registered {self.kind} {self.name!r} with factory "
                f"{self.factory!r}, which cannot be imported: {type(exc).__name__}: {exc}. "
                f"Reinstall the plugin or report it to its author."
            ) from exc


@dataclass
class PluginInfo:
    """A loaded plugin, as shown by ``invdiff plugins``."""

    name: str
    distribution: str
    version: str
    components: list[Component] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return sorted({c.kind for c in self.components})


class Registry:
    """Holds the plugin manager and every registered component."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.failed: dict[str, str] = {}
        #: (kind, name) -> message, for names two plugins register (disabled)
        self.conflicts: dict[tuple[str, str], str] = {}

    # -- loading -----------------------------------------------------------------------------
    def load_builtins(self) -> None:
        for name, module_name in BUILTINS.items():
            module = importlib.import_module(module_name)
            self.add_plugin(module, name=name, distribution="invdiff", strict=True)

    def load_entry_points(self) -> None:
        """Load the ``invdiff`` entry points allowed by ``INVDIFF_LOAD_PLUGINS``."""
        wanted = _wanted_plugins()
        strict = os.environ.get("INVDIFF_STRICT_PLUGINS", "") not in ("", "0", "false")
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation is the point
                self._fail(ep.name, dist, exc, strict)
                continue
            self.add_plugin(module, name=ep.name, distribution=dist, version=version,
                            strict=strict)

    def add_plugin(
        self,
        module: Any,
        name: str,
        distribution: str = "?",
        version: str = "",
        strict: bool = False,
    ) -> PluginInfo | None:
        """Register one plugin module; on failure warn (or raise when ``strict``).

        The plugin's hooks are called one plugin at a time and its components are committed
        only if all of them succeed, so a failing plugin leaves no half-registered state.
        """
        if not version:
            version = _dist_version(distribution)
        staged: list[Component] = []
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # noqa: BLE001
            self._fail(name, distribution, exc, strict)
            return None
        try:
            for kind, hook_name in HOOKS.items():
                caller = getattr(self.pm.hook, hook_name)
                for impl in caller.get_hookimpls():
                    if impl.plugin is module:
                        impl.function(register=_stager(staged, kind, name))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a sys.exit is a failure too
            self.pm.unregister(module)
            self._fail(name, distribution, exc, strict)
            return None
        # A clash is ambiguous, so the name is never silently given to either plugin: strict
        # loading raises; otherwise that name alone is disabled (an error when it is used, a
        # warning here and in `invdiff plugins`) and the rest of both plugins stays usable.
        clashes = {c: msg for c in staged if (msg := self._duplicate(c, staged))}
        if clashes and strict:
            self.pm.unregister(module)
            raise PluginError(next(iter(clashes.values())))
        info = PluginInfo(name=name, distribution=distribution, version=version,
                          components=staged)
        for comp in staged:
            if comp in clashes:
                self._disable(comp, clashes[comp])
            else:
                self.components[comp.kind][comp.name] = comp
        self.plugins[name] = info
        return info

    def _duplicate(self, comp: Component, staged: list[Component]) -> str | None:
        """The clash message if ``comp``'s name is taken (or already disabled), else None."""
        key = (comp.kind, comp.name)
        twins = [c for c in staged if (c.kind, c.name) == key]
        existing = self.components[comp.kind].get(comp.name)
        if existing is None and len(twins) < 2 and key not in self.conflicts:
            return None
        other = existing.plugin if existing is not None else (
            "earlier plugins" if key in self.conflicts else comp.plugin)
        return (f"{comp.kind} {comp.name!r} is registered by two plugins: {other!r} and "
                f"{comp.plugin!r}. Uninstall one, or choose with "
                f"INVDIFF_LOAD_PLUGINS=<comma list of plugins to load>.")

    def _disable(self, comp: Component, msg: str) -> None:
        self.components[comp.kind].pop(comp.name, None)
        self.conflicts[(comp.kind, comp.name)] = msg + " The name is disabled until then."
        warnings.warn(msg + " The name is disabled; the plugins' other components work.",
                      RuntimeWarning, stacklevel=4)

    def _fail(self, name: str, dist: str, exc: BaseException, strict: bool) -> None:
        msg = f"invdiff plugin {name!r} ({dist}) failed to load: {type(exc).__name__}: {exc}"
        self.failed[name] = msg
        if strict:
            raise PluginError(msg + " (INVDIFF_STRICT_PLUGINS is set)") from exc
        warnings.warn(msg + "; it is skipped. Set INVDIFF_STRICT_PLUGINS=1 to raise instead.",
                      RuntimeWarning, stacklevel=3)

    # -- lookup ------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Component:
        _check_kind(kind)
        if (kind, name) in self.conflicts:
            raise PluginError(self.conflicts[kind, name])
        try:
            return self.components[kind][name]
        except KeyError:
            raise UnknownComponentError(self._unknown_message(kind, name)) from None

    def _unknown_message(self, kind: str, name: str) -> str:
        known = sorted(self.components[kind])
        msg = f"unknown {kind} {name!r}; available: {', '.join(known) or '(none)'}."
        msg += (f" If a plugin provides {name!r}, install it (plugins are distributions "
                f"named invdiff-<plugin>, e.g. `pip install invdiff-<plugin>`); "
                f"`invdiff plugins` lists what is installed.")
        if self.failed:
            msg += f" Plugins that failed to load: {', '.join(sorted(self.failed))}."
        return msg

    def available(self, kind: str) -> list[str]:
        _check_kind(kind)
        return sorted(self.components[kind])

    def create(self, kind: str, name: str, **params: Any) -> Any:
        comp = self.get(kind, name)
        kwargs = validate_params(comp, params)
        return comp.resolve_factory()(**kwargs)


def validate_params(comp: Component, params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` with the component's pydantic model; return the keyword arguments."""
    if comp.params is None:
        return dict(params)
    try:
        model = comp.params.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid parameters for {comp.kind} {comp.name!r}:\n{_format_errors(exc)}\n"
            f"valid parameters: {describe_params(comp.params)}"
        ) from None
    return {k: getattr(model, k) for k in type(model).model_fields}


def describe_params(model: type[BaseModel]) -> str:
    """``name: type = default`` for each field of a parameter model."""
    parts = []
    for fname, f in model.model_fields.items():
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        default = "required" if f.is_required() else repr(f.default)
        parts.append(f"{fname}: {ann} = {default}")
    return "; ".join(parts) or "(none)"


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown parameter")
        else:
            lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _stager(staged: list[Component], kind: str, plugin: str) -> Callable[..., None]:
    def register(
        name: str,
        factory: Callable[..., Any] | str,
        params: type[BaseModel] | None = None,
        help: str = "",  # noqa: A002 - mirrors the public callback signature
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} without a name")
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(
                f"plugin {plugin!r} registered {kind} {name!r} with factory {factory!r}: "
                f"give a callable or a 'module:attribute' string"
            )
        staged.append(Component(kind, name, factory, params, help, plugin))

    return register


def _wanted_plugins() -> set[str] | None:
    raw = os.environ.get("INVDIFF_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _dist_version(distribution: str) -> str:
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return "?"


def _check_kind(kind: str) -> None:
    if kind not in HOOKS:
        raise UnknownComponentError(
            f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}"
        )


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        reg.load_builtins()
        reg.load_entry_points()
        _REGISTRY = reg
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (the next call reloads plugins). Used by tests."""
    global _REGISTRY
    _REGISTRY = None


def create(kind: str, name: str, **params: Any) -> Any:
    """Build the registered component ``name`` of ``kind`` with validated ``params``.

    ``kind`` is one of ``prior``, ``forward_model``, ``noise_model``, ``score_net``,
    ``sampler``, ``reference``, ``metric``, ``objective``. Unknown kinds, names or parameters
    raise errors listing what is valid.
    """
    return get_registry().create(kind, name, **params)


def available(kind: str) -> list[str]:
    """Names of the registered components of ``kind``."""
    return get_registry().available(kind)


def plugin_table() -> list[dict[str, Any]]:
    """One row per loaded plugin: name, distribution, version, kinds and components."""
    reg = get_registry()
    return [
        {
            "name": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "kinds": info.kinds,
            "components": [
                {"kind": c.kind, "name": c.name, "help": c.help} for c in info.components
            ],
        }
        for info in reg.plugins.values()
    ]
