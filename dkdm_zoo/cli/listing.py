"""`list`, `info` and `plugins`: what the registry holds. Never imports torch (except `info --teacher`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from dkdm_zoo.cli import flags
from dkdm_zoo.cli.common import console, print_json, registry_of
from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET, ENTRY_KINDS

LIST_KINDS = (*ENTRY_KINDS, "recipes")


def _entry_rows(registry: Any, kind: str, pattern: str) -> list[dict[str, Any]]:
    if kind == "recipes":
        import fnmatch

        from dkdm_zoo.config.catalog import discover_recipes

        recipes, _ = discover_recipes(registry)
        return [
            {
                "kind": "recipe",
                "name": r.name,
                "summary": r.description,
                "plugin": r.plugin,
                "available": True,
            }
            for name, r in sorted(recipes.items())
            if fnmatch.fnmatchcase(name, pattern)
        ]
    return [
        {
            "kind": kind[:-1],
            "name": e.name,
            "summary": e.summary if e.available else f"{e.summary} [unavailable: {e.unavailable_reason()}]",
            "plugin": e.plugin,
            "available": e.available,
        }
        for e in registry.list(kind, pattern)
    ]


def list_cmd(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Argument(help="teachers, students, methods or recipes (default: all)")
    ] = None,
    pattern: Annotated[
        str | None, typer.Argument(help="shell-style wildcard on names, e.g. '*unet*' (default: *)")
    ] = None,
    as_json: flags.Json = False,
) -> None:
    """List registered teachers, students, methods and recipes."""
    if kind is not None and kind not in LIST_KINDS:
        if kind.rstrip("s") + "s" in LIST_KINDS:
            kind = kind.rstrip("s") + "s"
        elif pattern is None:
            kind, pattern = None, kind  # `dkdm-zoo list '*unet*'`: one argument that is no kind is a pattern
        else:
            raise UserError(f"unknown kind '{kind}': expected one of {', '.join(LIST_KINDS)}")
    pattern = pattern or "*"
    kinds = LIST_KINDS if kind is None else (kind,)
    rows = [row for k in kinds for row in _entry_rows(registry_of(ctx), k, pattern)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(Text(f"nothing registered matches '{pattern}' (see `dkdm-zoo list`)"))
        return
    table = Table(title=None, show_lines=False)
    for column in ("kind", "name", "summary", "plugin"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = None if row["available"] else "dim"
        table.add_row(*(Text(str(row[k])) for k in ("kind", "name", "summary", "plugin")), style=style)
    console.print(table)
    broken = registry_of(ctx).broken_plugins
    if broken:
        console.print(f"[yellow]{len(broken)} plugin(s) failed to load; see `dkdm-zoo plugins`[/]")


def info_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="a teacher, student, method or recipe name")],
    kind: Annotated[str | None, typer.Option(help="disambiguate: teachers, students or methods")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="for a student: build it for this teacher (NAME, FAMILY@SOURCE, or a folder / hub id) "
            "and show its size"
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"student size preset, with --teacher (default: the student's own, {DEFAULT_STUDENT_PRESET} for the built-ins)"
        ),
    ] = None,
    as_json: flags.Json = False,
) -> None:
    """What an entry is, its options and defaults, and which plugin provides it."""
    registry = registry_of(ctx)
    if kind is not None:
        entries = [registry.get(kind if kind.endswith("s") else kind + "s", name)]
    else:
        entries = registry.find(name)
    if not entries:
        from dkdm_zoo.config.catalog import discover_recipes

        recipes, _ = discover_recipes(registry)
        if name in recipes:
            from dkdm_zoo.cli.recipes_cmd import show

            show(name)
            return
        raise registry.unknown_name("names", name, [*registry.all_names(), *recipes])
    described = [{**e.describe(), **_preset_fields(e)} for e in entries]
    if teacher is not None:
        student_entries = [e for e in entries if e.kind == "students"]
        if not student_entries:
            raise UserError(f"--teacher applies to students; '{name}' is a {entries[0].kind[:-1]}")
        from dkdm_zoo.cli.common import announce
        from dkdm_zoo.config.build import check_run_conditions
        from dkdm_zoo.config.resolve import resolve_teacher
        from dkdm_zoo.students.base import describe_student

        ref = resolve_teacher(teacher, registry)
        if ref.detected is not None:
            announce(ref.detected)
        built_teacher = registry.create("teachers", ref.name, **({"path": ref.source} if ref.source else {}))
        try:
            check_run_conditions(built_teacher, ref.name, registry)
            run_check = "ok"
        except UserError as exc:  # informational here: the student's size is still worth showing
            run_check = str(exc)
        built = describe_student(built_teacher.spec, name, preset, registry=registry, teacher=built_teacher)
        for d in described:
            if d["kind"] == "student":
                d["built_for_teacher"] = {
                    "teacher": teacher,
                    "family": ref.name,
                    **built,
                    "run_check": run_check,
                }
    if as_json:
        print_json(described if len(described) > 1 else described[0])
        return
    for d in described:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key in ("name", "kind", "summary", "plugin", "factory"):
            table.add_row(key, Text(str(d[key])))  # plugin text is data, never markup
        if d["unavailable_reason"]:
            table.add_row("unavailable", Text(d["unavailable_reason"]))
        options, types_ = d["options"] or {}, d.get("option_types") or {}
        table.add_row(
            "options",
            Text("\n".join(f"{k} = {v!r}  ({types_.get(k, 'any')})" for k, v in options.items()) or "(none)"),
        )
        if d.get("preset_fields"):
            table.add_row(
                "--set student.",
                Text("\n".join(f"{k}  ({t}): {v}" for k, (t, v) in d["preset_fields"].items())),
            )
        if d.get("accepts"):
            table.add_row("detects", Text(", ".join(d["accepts"])))
        if d.get("train_defaults"):
            label = {"*": "every preset: "} if d["kind"] == "student" else {"*": ""}  # a method's: no presets
            lines = [
                label.get(preset, f"{preset}: ") + ", ".join(f"train.{k} = {v!r}" for k, v in values.items())
                for preset, values in d["train_defaults"].items()
            ]
            table.add_row("train defaults", Text("\n".join(lines)))
        for key, value in d.get("built_for_teacher", {}).items():
            table.add_row(key, Text(str(value)))
        console.print(table)
        console.print()


def _preset_fields(entry) -> dict[str, object]:
    """A student's preset fields (what ``--set student.KEY=VALUE`` may change): each one's type and
    value per preset, read off the ``PRESETS`` of the factory's module (built-ins and the scaffold's)."""
    import sys

    if entry.kind != "students" or not entry.available:
        return {}
    presets = getattr(sys.modules.get(getattr(entry.load(), "__module__", ""), None), "PRESETS", None)
    if not isinstance(presets, dict) or not presets:
        return {}
    from dkdm_zoo.registry.options import describe
    from dkdm_zoo.students.base import preset_types, preset_values

    types = preset_types(presets)
    values = {name: preset_values(p) for name, p in presets.items()}
    fields = next(iter(values.values()))
    return {
        "preset_fields": {
            key: (describe(types.get(key, object)), ", ".join(f"{n} {v[key]!r}" for n, v in values.items()))
            for key in fields
        }
    }


def plugins_cmd(
    ctx: typer.Context,
    as_json: flags.Json = False,
) -> None:
    """Installed plugins, their versions, load times, what each registers, and broken ones with their error."""
    from dkdm_zoo.registry.registry import SLOW_PLUGIN_SECONDS

    plugins = registry_of(ctx).plugins
    if as_json:
        print_json([p.to_dict() for p in plugins])
        return
    table = Table()
    for column in ("plugin", "version", "status", "load", "registers"):
        table.add_column(column, overflow="fold")
    for p in plugins:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p.registered.items())
        # plugin text is data: Text() shows brackets as they are (no markup)
        status = Text("ok", style="green") if p.ok else Text.assemble(("broken ", "red"), p.error or "")
        load = Text(f"{p.load_seconds * 1000:,.0f} ms")
        if p.slow:
            load.append(" slow", style="yellow")
        label = f"{p.name} (built-in)" if p.builtin else p.name
        table.add_row(Text(label), Text(p.version or "?"), status, load, Text(registers))
    console.print(table)
    slow = [p for p in plugins if p.slow]
    if slow:
        names = ", ".join(f"'{p.name}' ({p.load_seconds:.1f} s)" for p in slow)
        console.print(
            Text(
                f"slow to load (>= {SLOW_PLUGIN_SECONDS} s, paid by every dkdm-zoo command): {names}; "
                "keep the plugin's hook module light (lazy 'module:attr' factories), or disable it with "
                "DKDM_ZOO_LOAD_PLUGINS / DKDM_ZOO_DISABLE_PLUGIN_AUTOLOAD"
            ),
            soft_wrap=True,
        )
