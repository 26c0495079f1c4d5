"""`slimlm recipes list|validate|show`: the builtin recipes and checking your own."""

from __future__ import annotations

import typer
from rich.table import Table

from slimlm.cli._out import emit_json, out

recipes_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="List, show and validate compression recipes.")


@recipes_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the builtin recipes."""
    from slimlm.recipes import builtin_names, load_recipe

    recipes = [load_recipe(n) for n in builtin_names()]
    if as_json:
        emit_json([{"name": r.name, "description": r.description, "stages": [s.label() for s in r.stages]}
                   for r in recipes])
        return
    t = Table(title="builtin recipes")
    t.add_column("name")
    t.add_column("stages")
    t.add_column("description", overflow="fold")
    for r in recipes:
        t.add_row(r.name, " → ".join(s.label() for s in r.stages), r.description)
    out.print(t)


@recipes_app.command("validate")
def validate_command(file: str = typer.Argument(..., metavar="FILE", help="Recipe YAML file (or builtin name)."),
                     as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Validate a recipe; a bad field fails with its path (stages[i].kind.field)."""
    from slimlm.recipes import load_recipe

    r = load_recipe(file)
    if as_json:
        emit_json({"valid": True, "name": r.name, "stages": [s.to_dict() for s in r.stages]})
        return
    out.print(f"[green]valid[/green]: {r.name}: " + " → ".join(s.label() for s in r.stages))


@recipes_app.command("show")
def show_command(name: str = typer.Argument(..., metavar="NAME", help="Builtin recipe name or YAML file."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print a recipe as YAML (a starting point for your own)."""
    from slimlm.recipes import load_recipe

    r = load_recipe(name)
    if as_json:
        emit_json({"name": r.name, "description": r.description, "stages": [s.to_dict() for s in r.stages],
                   "yaml": r.to_yaml()})
        return
    out.print(r.to_yaml(), highlight=False, markup=False)
