"""The registry of node kinds: built-in and user kinds enter through the same door.

A node kind is one unit: a torch-free spec class (a :class:`~archdsl.spec.base.NodeSpec`
subclass: its fields are the language, its methods the shape, parameter, FLOP, decode-state and
label rules) plus a builder that turns a resolved IR node into a ``torch.nn.Module``. The builder
is named as ``"package.module:function"`` (or given as a callable) and imported only when a model
is compiled, so ``archdsl validate`` / ``summary`` never import torch.

    import archdsl
    from archdsl.spec import NodeSpec

    @archdsl.register_kind(build="my_package.blocks:build_gated_mixer")
    class GatedMixer(NodeSpec):
        kind = "gated_mixer"
        ...

Installed packages add kinds through the ``archdsl.kinds`` entry-point group; each entry point's
name is the kind and its value the spec class (``gated_mixer = "my_package.spec:GatedMixer"``).
They are imported on first use of that name (or when every kind is listed: schema, docs, "did
you mean"). A YAML spec can only *use* kinds registered this way: it can never name a module or a
path to import, so reading a spec still cannot run code.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

ENTRY_POINT_GROUP = "archdsl.kinds"
BUILTIN = "archdsl"  # the origin of the kinds that ship with archdsl
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# names the IR uses for its own structural nodes: a kind with one of them would be ambiguous in the graph
STRUCTURAL = {"model", "stack", "layer", "branch", "add", "sum", "input", "output"}


_resolved: dict[str, Callable[..., Any]] = {}  # "module:function" -> the builder, imported once


class KindError(ValueError):
    """A kind cannot be registered or loaded (a clash, a bad class, a plugin that fails to import)."""


@dataclass(frozen=True)
class Kind:
    """One registered node kind."""

    name: str
    spec: type  # the NodeSpec subclass
    build: str | Callable[..., Any] | None  # "module:function", a callable, or None for composites
    origin: str  # "archdsl" (built in), the distribution of a plugin, or "python" (register_kind from code)

    @property
    def builtin(self) -> bool:
        return self.origin == BUILTIN

    def builder(self) -> Callable[..., Any]:
        """The module builder, imported on first use (the only step that may import torch)."""
        if callable(self.build):
            return self.build
        if self.build in _resolved:
            return _resolved[self.build]
        if not isinstance(self.build, str) or ":" not in self.build:
            raise KindError(f"kind '{self.name}' has no builder (give register_kind(..., build=...) a callable or "
                            "'package.module:function')")
        module_name, _, attr = self.build.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise KindError(f"the builder of kind '{self.name}' ({self.build}, from {self.origin}) cannot be "
                            f"loaded: {exc}") from None
        _resolved[self.build] = target
        return target


class _Registry:
    """name -> Kind, plus the entry points of installed plugins, loaded lazily by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}
        self._plugins: dict[str, Any] | None = None  # kind name -> entry point, read once
        self._plugin_errors: dict[str, str] = {}  # kind name -> why its plugin is unusable

    # ------------------------------------------------------------------ registration
    def register(self, spec: type, build: str | Callable[..., Any] | None, origin: str, replace: bool) -> type:
        from .spec.base import NodeSpec

        if not (isinstance(spec, type) and issubclass(spec, NodeSpec)):
            raise KindError(f"register_kind takes a NodeSpec subclass, got {spec!r}")
        name = getattr(spec, "kind", None)
        if not isinstance(name, str) or not _KIND_NAME.match(name):
            raise KindError(f"{spec.__qualname__}.kind must be a lower-case name (letters, digits, _; at most 64), "
                            f"got {name!r}")
        if name in STRUCTURAL:
            raise KindError(f"'{name}' names a structural node of the block graph; choose another kind name")
        build = build if build is not None else getattr(spec, "builder", None)
        if spec.leaf and build is None:
            raise KindError(f"kind '{name}' needs a builder: register_kind({spec.__qualname__}, build=...) or a "
                            "`builder = 'package.module:function'` class attribute")
        if origin != BUILTIN and not spec.leaf:
            raise KindError(f"kind '{name}': only leaf kinds can be added; composition (residual, parallel, repeat, with_memory) "
                            "is part of the language")
        from .spec.base import check_kind_class

        try:
            check_kind_class(spec)
        except ValueError as exc:
            raise KindError(str(exc)) from None
        existing = self._kinds.get(name)
        if existing is not None and existing.spec is not spec:
            if existing.builtin:
                raise KindError(f"'{name}' is a built-in kind of archdsl; a kind from {origin} cannot replace it "
                                "(choose another name)")
            same_class = (existing.spec.__module__, existing.spec.__qualname__) == (spec.__module__, spec.__qualname__)
            if not (replace or same_class):  # the same class defined again (a re-run notebook cell) replaces quietly
                raise KindError(f"kind '{name}' is registered twice: by {existing.origin} "
                                f"({existing.spec.__module__}.{existing.spec.__qualname__}) and by {origin} "
                                f"({spec.__module__}.{spec.__qualname__}); pass replace=True to replace it")
        self._kinds[name] = Kind(name, spec, build, origin)
        _node_kinds_changed()
        return spec

    def unregister(self, name: str) -> None:
        kind = self._kinds.get(name)
        if kind is None:
            return
        if kind.builtin:
            raise KindError(f"'{name}' is a built-in kind and cannot be removed")
        del self._kinds[name]
        _node_kinds_changed()

    # ------------------------------------------------------------------ plugins
    def plugins(self) -> dict[str, Any]:
        """kind name -> entry point of every installed `archdsl.kinds` plugin (not imported yet)."""
        if self._plugins is None:
            self._plugins = {}
            from importlib.metadata import entry_points

            seen: dict[str, str] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                dist = _distribution(ep)
                existing = self._kinds.get(ep.name)
                if existing is not None and existing.builtin:
                    self._plugin_errors[ep.name] = (f"the installed distribution {dist} declares kind '{ep.name}', "
                                                    "which is built into archdsl; a plugin cannot replace a built-in "
                                                    "kind (the built-in one is used)")
                    continue
                if ep.name in seen and seen[ep.name] != dist:
                    self._plugin_errors[ep.name] = (f"kind '{ep.name}' is declared by two installed distributions, "
                                                    f"{seen[ep.name]} and {dist}; uninstall one of them")
                    continue
                seen[ep.name] = dist
                self._plugins[ep.name] = ep
        return self._plugins

    def _load_plugin(self, name: str) -> Kind | None:
        ep = self.plugins().get(name)  # reads the entry points (and their clashes) once
        if name in self._plugin_errors:
            raise KindError(self._plugin_errors[name])
        if ep is None:
            return None
        dist = _distribution(ep)
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plugin must not break archdsl: name it and go on
            self._plugin_errors[name] = (f"the plugin {dist} for kind '{name}' failed to import "
                                         f"({ep.value}): {type(exc).__name__}: {exc}")
            raise KindError(self._plugin_errors[name]) from None
        if getattr(spec, "kind", None) != name:
            self._plugin_errors[name] = (f"the entry point '{name}' of {dist} loads {ep.value}, whose kind is "
                                         f"{getattr(spec, 'kind', None)!r}; the entry point name must be the kind")
            raise KindError(self._plugin_errors[name])
        existing = self._kinds.get(name)
        if existing is not None and existing.spec is spec:
            if existing.origin != dist:  # the plugin's module registered itself on import: record where it came from
                self._kinds[name] = Kind(name, spec, existing.build, dist)
            return self._kinds[name]
        try:
            self.register(spec, None, dist, replace=False)
        except KindError as exc:
            self._plugin_errors[name] = str(exc)
            raise
        return self._kinds[name]

    # ------------------------------------------------------------------ lookup
    def get(self, name: Any) -> Kind | None:
        """The kind of this name, loading its plugin if an installed one declares it; None if unknown.
        Raises KindError when a plugin declares it but cannot be used."""
        if not isinstance(name, str):
            return None
        kind = self._kinds.get(name)
        if kind is not None:
            return kind
        return self._load_plugin(name)

    def names(self) -> list[str]:
        """Every kind name: registered ones and those installed plugins declare (without importing them)."""
        return list(self._kinds) + [n for n in self.plugins() if n not in self._kinds]

    def load_all(self) -> list[str]:
        """Import every installed plugin (for the schema and the language reference); returns the errors."""
        for name in list(self.plugins()):
            try:
                self.get(name)
            except KindError:
                pass  # recorded in _plugin_errors
        return list(dict.fromkeys(self._plugin_errors.values()))

    def problem(self, name: Any) -> str | None:
        """Why an installed plugin's kind of this name cannot be used, or None."""
        if isinstance(name, str):
            try:
                self.get(name)
            except KindError as exc:
                return str(exc)
        return None

    def installed(self) -> dict[str, str]:
        """kind name -> distribution, for every installed plugin."""
        return {name: _distribution(ep) for name, ep in self.plugins().items()}

    def __iter__(self) -> Iterator[Kind]:
        return iter(list(self._kinds.values()))


def _distribution(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or ep.value.split(":")[0].split(".")[0]


REGISTRY = _Registry()
_listeners: list[Callable[[], None]] = []


def _node_kinds_changed() -> None:
    for listener in _listeners:
        listener()


def register_kind(spec: type | None = None, build: str | Callable[..., Any] | None = None, *,
                  replace: bool = False, origin: str = "python") -> Any:
    """Add a node kind: ``register_kind(MySpec, build=my_builder)``, or as a class decorator
    ``@register_kind(build="pkg.blocks:build_my_kind")``.

    ``MySpec`` is a :class:`~archdsl.spec.base.NodeSpec` subclass whose ``kind`` is the YAML key.
    ``build(node)`` receives an :class:`archdsl.blocks.BuildContext` and returns an ``nn.Module``
    whose ``forward(x, ctx)`` maps the stream (batch, seq, width) to (batch, seq, out_width).
    Registering a name twice with different classes is an error (``replace=True`` replaces a user
    kind); a built-in kind can never be replaced.
    """
    if spec is None:
        return lambda cls: REGISTRY.register(cls, build, origin, replace)
    return REGISTRY.register(spec, build, origin, replace)


def unregister_kind(name: str) -> None:
    """Remove a user kind (tests, notebooks); built-in kinds stay."""
    REGISTRY.unregister(name)


def get_kind(name: str) -> Kind | None:
    return REGISTRY.get(name)


def kinds(*, load_plugins: bool = True) -> Mapping[str, Kind]:
    """Every registered kind by name (importing installed plugins unless load_plugins=False)."""
    if load_plugins:
        REGISTRY.load_all()
    return {k.name: k for k in REGISTRY}


__all__ = ["Kind", "KindError", "REGISTRY", "register_kind", "unregister_kind", "get_kind", "kinds",
           "ENTRY_POINT_GROUP"]
