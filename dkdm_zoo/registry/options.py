"""Options are declared once: a factory's annotated signature, or its ``Options`` dataclass, is their schema.

``schema_of(factory)`` reads the keyword parameters' type annotations and defaults (or, when the
factory carries an ``Options`` dataclass, that dataclass's fields: the built-ins declare theirs as
``OptionSet`` subclasses, so families and methods share common options by extending one set);
``Schema.check`` validates and converts every value, whatever its source (a recipe, ``--set``, a flag,
a run.json, a direct construction of an ``OptionSet``), and refuses in one line naming the key, the
value and what was expected:

- ``Literal["a", "b"]``: one of the choices; ``bool``: true or false (text such as "False", "no"
  or "0" is converted, text that is no boolean is refused: never truthy); ``int``: an integer (not a bool, not 3.5);
  ``float``: a finite number (an int is converted; NaN and inf are refused); ``str``; ``X | None``;
  ``list[X]`` / ``tuple[X, ...]`` / ``Sequence[X]`` (TOML arrays convert);
- range constraints through ``typing.Annotated`` metadata from ``annotated_types``
  (``Annotated[float, Gt(0)]``, ``Annotated[float, Interval(ge=0, lt=1)]``);
- a parameter without an annotation takes any value; a factory with ``**kwargs`` accepts keys
  beyond its named options (it checks them itself, e.g. a student's preset overrides).

Checking uses pydantic (imported only when a value is checked: `--help` and `list` stay light).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Interval, MinLen

from dkdm_zoo.errors import UserError

REQUIRED: Any = inspect.Parameter.empty  # the default of an option the caller must give

# Ranges used across the project (plugins may use them, or annotated_types directly).
PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
UnitInterval = Annotated[float, Interval(ge=0, lt=1)]  # [0, 1): dropout, EMA decay, Adam betas
Widths = Annotated[tuple[PositiveInt, ...], MinLen(1)]  # per-level channel widths


@dataclass
class Option:
    """One option: its name, resolved annotation (``Any`` when none) and default (``REQUIRED``)."""

    name: str
    annotation: Any = Any
    default: Any = REQUIRED
    _adapter: Any = field(default=None, repr=False, compare=False)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def expected(self) -> str:
        """What a valid value is, in words ("a finite number > 0", "one of 'a', 'b'")."""
        return describe(self.annotation)

    @property
    def type_text(self) -> str:
        """The annotation as a user reads it (``float > 0 | None``, ``'ddim' | 'ddpm'``)."""
        return type_text(self.annotation)

    def check(self, value: Any, label: str) -> Any:
        """``value`` converted to this option's type, or a one-line ``UserError`` starting with ``label``."""
        if self.annotation is Any:
            return value
        adapter = self._type_adapter()
        if adapter is None:
            return value
        from pydantic import ValidationError

        try:
            return adapter.validate_python(value)
        except ValidationError:
            raise UserError(f"{label} = {_show(value)} is not {self.expected}") from None

    def _type_adapter(self) -> Any:
        if self._adapter is None:
            from pydantic import ConfigDict, TypeAdapter

            try:
                self._adapter = TypeAdapter(
                    _strict_numbers(self.annotation),
                    config=ConfigDict(allow_inf_nan=False, arbitrary_types_allowed=True),
                )
            except Exception:  # noqa: BLE001 - an annotation pydantic cannot check is not checked
                self._adapter = False
        return self._adapter or None


@dataclass
class Schema:
    """The options of a factory; ``open`` when it also takes ``**kwargs`` (it checks those itself)."""

    options: dict[str, Option] = field(default_factory=dict)
    open: bool = False

    def defaults(self) -> dict[str, Any]:
        return {name: (None if o.required else o.default) for name, o in self.options.items()}

    def check(
        self,
        values: Mapping[str, Any],
        *,
        section: str,
        owner: str = "",
        where: str = "",
        require: bool = False,
    ) -> dict[str, Any]:
        """``values`` checked and converted. ``section`` prefixes keys in messages (``method.rho``),
        ``owner`` says whose options they are ("method 'dkdm'"), ``where`` where they came from (a
        file, ``--set``); ``require``: options without a default must be present."""
        prefix = f"{where}: " if where else ""
        out: dict[str, Any] = {}
        for key, value in values.items():
            option = self.options.get(key)
            if option is None:
                if self.open:
                    out[key] = value
                    continue
                raise UserError(f"{prefix}{self.unknown_key(key, section, owner)}")
            out[key] = option.check(value, f"{prefix}{section}.{key}")
        if require:
            missing = [n for n, o in self.options.items() if o.required and n not in values]
            if missing:
                whose = f"{owner} " if owner else ""
                raise UserError(
                    f"{prefix}{whose}needs {', '.join(f'{section}.{m}' for m in missing)} "
                    f"({'; '.join(f'{m}: {self.options[m].expected}' for m in missing)})"
                )
        return out

    def unknown_key(self, key: str, section: str, owner: str = "") -> str:
        names = sorted(self.options)
        close = difflib.get_close_matches(key, names, n=2, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        whose = f" for {owner}" if owner else ""
        return f"unknown key '{section}.{key}'{whose}{hint}; options: {', '.join(names) or 'none'}"


def schema_of(factory: Callable[..., Any], *, skip: Iterable[str] = ()) -> Schema:
    """The options of ``factory``: its ``Options`` dataclass's fields when it has one, else its keyword
    parameters (minus ``skip``), annotations and defaults.

    A class is read through its ``__init__`` (a dataclass through its fields). A callable whose
    signature cannot be read gives an open schema without options.
    """
    declared = getattr(factory, "Options", None)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return _dataclass_schema(declared)
    return _signature_schema(factory, frozenset(skip))


@functools.cache
def _dataclass_schema(cls: type) -> Schema:
    """An options dataclass's schema, read once per class (its type adapters are built once too)."""
    return _signature_schema(cls, frozenset())


def _signature_schema(factory: Callable[..., Any], skip: frozenset[str]) -> Schema:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return Schema(open=True)
    hints = _type_hints(factory)
    schema = Schema()
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            schema.open = True
        elif param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and param.name not in skip:
            if param.kind is param.POSITIONAL_OR_KEYWORD and param.default is param.empty:
                continue  # a positional input (the spec, the teacher), not an option
            schema.options[param.name] = Option(param.name, hints.get(param.name, Any), param.default)
    return schema


@dataclass(frozen=True)
class OptionSet:
    """A set of options as a frozen dataclass: the annotated fields (``Annotated`` ranges, ``Literal``
    choices) are the schema, and constructing one checks and converts every value through it, so a
    value is refused the same way (``Schema.check``, one line) wherever it comes from.

    A factory declares its options by carrying one as ``Options`` (a method class:
    ``Options = DKDMOptions``; a function: ``@takes_options(HubTeacherOptions)``); it is then called
    with the options as keyword arguments, as any factory is. Sets share options by extending a
    common set (SiD and Diff-Instruct extend ``ScoreDistillOptions``; every hub teacher family
    extends ``HubTeacherOptions``) and may redeclare a field to change its default.
    """

    #: the recipe section these options belong to, for messages (``method.rho = -1 is not ...``)
    SECTION: ClassVar[str] = "option"

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        checked = _dataclass_schema(type(self)).check(values, section=self.SECTION)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def takes_options(options: type[OptionSet]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``fn(*inputs, options)`` as a factory called ``factory(*inputs, **values)``: the values become
    ``options(**values)`` (checked) and the factory carries ``Options`` for ``schema_of``. A ``fn``
    with a keyword-only ``registry`` parameter still receives the command's registry."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        takes_registry = "registry" in inspect.signature(fn).parameters

        @functools.wraps(fn)
        def factory(*inputs: Any, **values: Any) -> Any:
            extra = {"registry": values.pop("registry")} if takes_registry else {}
            return fn(*inputs, options(**values), **extra)

        factory.Options = options  # type: ignore[attr-defined]
        del factory.__wrapped__  # what callers see is the options, not fn's own signature
        kinds = inspect.Parameter
        params = [kinds("registry", kinds.KEYWORD_ONLY)] if takes_registry else []
        factory.__signature__ = inspect.Signature([*params, kinds("values", kinds.VAR_KEYWORD)])  # type: ignore[attr-defined]
        return factory

    return decorate


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations (string annotations evaluated in the factory's module); one that cannot
    be resolved (a name imported only for type checkers) is ``Any``, without failing the others."""
    target: Any = factory
    if isinstance(factory, type) and not dataclasses.is_dataclass(factory):
        target = factory.__init__
    target = inspect.unwrap(getattr(target, "func", target))  # functools.partial, decorators
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - fall back to one annotation at a time
        pass
    raw = getattr(target, "__annotations__", {}) or {}
    namespace = getattr(target, "__globals__", None)
    if namespace is None:
        module = inspect.getmodule(target)
        namespace = vars(module) if module is not None else {}
    hints = {}
    for name, annotation in raw.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, namespace, include_extras=True)[name]
        except Exception:  # noqa: BLE001
            hints[name] = Any
    return hints


# -- pydantic: strict numbers (no bool or string for a number), everything else as pydantic's lax mode


def _strict_numbers(annotation: Any) -> Any:
    from annotated_types import Interval
    from pydantic import Strict

    if annotation is int:  # a count past int64 fits no tensor, numpy array or loop (2**64 steps hang)
        return typing.Annotated[int, Strict(), Interval(ge=-(2**63), le=2**63 - 1)]
    if annotation is float:
        return typing.Annotated[annotation, Strict()]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return typing.Annotated[(_strict_numbers(args[0]), *annotation.__metadata__)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict_numbers(a) for a in args)]  # noqa: UP007 - built from a tuple
    if origin is Literal or not args:
        return annotation
    try:
        return origin[tuple(a if a is Ellipsis else _strict_numbers(a) for a in args)]
    except TypeError:
        return annotation


# -- words ---------------------------------------------------------------------------------------------

_WORDS: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a finite number", "finite numbers"),
    str: ("a string", "strings"),
}
_SEQUENCES = (list, tuple, collections.abc.Sequence, set, frozenset)


def describe(annotation: Any) -> str:
    """``annotation`` as words: "a finite number > 0", "one of 'a', 'b'", "a list of integers, or unset"."""
    return _describe(annotation, plural=False)


def _describe(annotation: Any, plural: bool) -> str:
    if annotation is Any:
        return "values" if plural else "any value"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        base = _describe(args[0], plural)
        bounds = _bounds(annotation.__metadata__)
        return f"{base} {bounds}" if bounds else base
    if origin in (typing.Union, types.UnionType):
        choices = [a for a in args if a is not type(None)]
        text = " or ".join(_describe(a, plural) for a in choices)
        return f"{text}, or unset" if len(choices) < len(args) else text
    if origin is Literal:
        return ("values among " if plural else "one of ") + ", ".join(repr(a) for a in args)
    if annotation in _WORDS:
        return _WORDS[annotation][plural]
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        items = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(items) > 1:
            inner = ", ".join(_describe(a, False) for a in items)
            text = f"a list of {len(items)} values ({inner})"
            return f"lists of {len(items)} values ({inner})" if plural else text
        inner = _describe(items[0], True) if items else "values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if annotation is type(None):
        return "unset"
    base = origin or annotation
    if isinstance(base, type) and issubclass(base, os.PathLike | PurePath):
        return "paths" if plural else "a path"
    name = getattr(annotation, "__name__", None) or str(annotation)
    return f"{name} values" if plural else f"a {name}"


def _bounds(metadata: Iterable[Any]) -> str:
    """``Gt(0)``, ``Ge(0)``, ``Lt(1)``, ``Le(1)``, ``Interval(...)`` and pydantic ``Field(gt=...)`` as text."""
    parts = []
    for item in _flatten(metadata):
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attr, None)
            if value is not None and type(item).__name__ != "Interval":
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        if getattr(item, "min_length", None):
            parts.append(f"with at least {item.min_length} item(s)")
        if getattr(item, "max_length", None) is not None:
            parts.append(f"with at most {item.max_length} item(s)")
    return " and ".join(parts)


def _flatten(metadata: Iterable[Any]) -> list[Any]:
    out = []
    for item in metadata:
        nested = getattr(item, "metadata", None)  # pydantic FieldInfo
        if isinstance(nested, list):
            out += _flatten(nested)
        elif type(item).__name__ == "Interval":  # annotated_types.Interval groups Gt/Ge/Lt/Le
            out += list(item)
        else:
            out.append(item)
    return out


def type_text(annotation: Any) -> str:
    """A short type for tables: ``float > 0``, ``'ddim' | 'ddpm'``, ``list[int] | None``."""
    if annotation is Any:
        return "any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = _bounds(annotation.__metadata__)
        return f"{type_text(args[0])} {bounds}".strip()
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if annotation is type(None):
        return "None"
    if args:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else type_text(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
