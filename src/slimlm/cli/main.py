"""The ``slimlm`` console script: one Typer app, one module per subcommand, registered explicitly.

Errors a user can cause (`SlimlmError`) print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys

import typer

from slimlm._quiet import quiet

# Plain (click) help: rich's option table cuts long option names to "--trust-remote-…" below ~120 columns, and
# piped help is 80 columns wide; the plain layout wraps the descriptions and never cuts a name.
HELP_MARKUP = None
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=HELP_MARKUP, context_settings={"max_content_width": 120},
                  help="slimlm: measure, compress and search transformer language models.")


@app.callback()
def _root() -> None:
    """slimlm: measure, compress and search transformer language models."""


def _register() -> None:
    if app.registered_commands:  # main() may run many times in one process (tests); register once
        return
    from slimlm.cli import evaluate_cmd

    app.command("evaluate")(evaluate_cmd.evaluate_command)
    for name, module, attr in _COMMANDS:
        mod = __import__(f"slimlm.cli.{module}", fromlist=[attr])
        app.command(name)(getattr(mod, attr))
    from slimlm.cli.recipes_cmd import recipes_app

    app.add_typer(recipes_app, name="recipes")


# (command name, module under slimlm.cli, function): one line per command, added by each feature
_COMMANDS: list[tuple[str, str, str]] = [
    ("profile", "profile_cmd", "profile_command"),
    ("demo", "demo_cmd", "demo_command"),
    ("quantize", "quantize_cmd", "quantize_command"),
    ("prune", "prune_cmd", "prune_command"),
    ("sensitivity", "sensitivity_cmd", "sensitivity_command"),
    ("report", "report_cmd", "report_command"),
    ("compress", "compress_cmd", "compress_command"),
    ("search", "search_cmd", "search_command"),
    ("distill", "distill_cmd", "distill_command"),
    ("finetune", "finetune_cmd", "finetune_command"),
    ("generate", "generate_cmd", "generate_command"),
    ("decide", "decide_cmd", "decide_command"),
    ("serve", "serve_cmd", "serve_command"),
    ("monitor", "monitor_cmd", "monitor_command"),
    ("export", "export_cmd", "export_command"),
]


def main(argv: list[str] | None = None) -> int:
    from slimlm.errors import SlimlmError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    quiet()
    _register()
    try:
        result = app(args=argv, prog_name="slimlm", standalone_mode=False)
        return int(result or 0) if isinstance(result, int) else 0
    except SlimlmError as exc:
        if debug:
            raise
        from rich.markup import escape

        from slimlm.cli._out import err

        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)  # keeps [extras]
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: typer vendors click, so match its base class
        return _usage_error(exc, argv)
    except (typer.Abort, KeyboardInterrupt):
        from slimlm.cli._out import err

        err.print("interrupted")
        return 130


def _usage_error(exc, argv: list[str]) -> int:
    """A bad option or value: one ``error:`` line naming it and where to look, like every other user error."""
    from rich.markup import escape

    from slimlm.cli._out import err

    msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    cmd = next((a for a in argv if not a.startswith("-")), None)
    if cmd and msg.startswith("No such command") and f"'{cmd}'" in msg:  # the command itself is the typo
        cmd = None
    hint = f"see `slimlm {cmd} --help`" if cmd else "see `slimlm --help`"
    line = " ".join(msg.split()).rstrip(".")
    err.print(f"[bold red]error:[/bold red] {escape(line)}; {hint}.", highlight=False, soft_wrap=True)
    return getattr(exc, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
