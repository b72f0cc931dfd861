"""The Typer CLI. Each command lives in its own module; heavy imports stay inside command bodies
so that `cvtool --help` and `cvtool convcalc` never load torch or onnxruntime."""

from __future__ import annotations

import errno
import sys

import typer

from cvtool.errors import CvtoolError

app = typer.Typer(
    name="cvtool",
    help="Understand, train, run and cross-check convolutional networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from cvtool.cli.backends_cmd import backends
    from cvtool.cli.bench import bench
    from cvtool.cli.convcalc.command import convcalc
    from cvtool.cli.data_cmd import data_app
    from cvtool.cli.demo import demo
    from cvtool.cli.export import export
    from cvtool.cli.segment import segment
    from cvtool.cli.train import train
    from cvtool.cli.val import val

    app.command("convcalc")(convcalc)
    app.command("backends")(backends)
    app.command("train")(train)
    app.command("segment")(segment)
    app.command("val")(val)
    app.command("export")(export)
    app.command("demo")(demo)
    app.command("bench")(bench)
    app.add_typer(data_app, name="data")


_register()


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def fail(message: str, hint: str | None = None, code: int = 1) -> int:
    from cvtool.cli.output import safe

    line = f"error: {message}"
    if hint:
        line += f" (hint: {hint})"
    print(safe(line, markup=False), file=sys.stderr)  # names in it may hold escapes, newlines or non-UTF-8 bytes
    return code


def bug_report(e: BaseException, argv: list[str]) -> tuple[str, str]:
    """(message, hint) for an exception no cvtool code expected: exit 70 is for bugs only, so it asks for a report
    naming what is needed to reproduce it: the command and the version."""
    import shlex

    from cvtool import __version__

    what = (str(e).splitlines() or [""])[0][:300]
    command = shlex.join(["cvtool", *map(str, argv)])
    if len(command) > 300:
        command = command[:297] + "..."
    return (f"internal error: {type(e).__name__}{': ' + what if what else ''}. This is a bug in cvtool {__version__}: "
            f"please report it with the command ({command}) and this line",
            "CVTOOL_DEBUG=1 shows the traceback to attach")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turn every expected failure into one line on stderr and an exit code."""
    import os

    from typer.exceptions import Abort, Exit

    try:  # recent Typer vendors click as typer._click; older ones depend on click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc  # type: ignore[no-redef]  # the same module, before the vendoring

    try:
        rv = app(args=argv, prog_name="cvtool", standalone_mode=False)
    except CvtoolError as e:
        sys.exit(fail(e.message, e.hint, e.exit_code))
    except click_exc.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "cvtool"
        sys.exit(fail(e.format_message(), f"see '{cmd} --help'", 2))
    except click_exc.ClickException as e:
        sys.exit(fail(e.format_message(), None, e.exit_code))
    except Exit as e:
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        sys.exit(fail("interrupted", None, 130))
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:  # the system's refusal, not a bug: stdout on a full disk, a file vanishing mid-read
        where = f"{e.filename}: " if e.filename else "cannot write the output: " if e.errno in _FULL else ""
        sys.exit(fail(f"{where}{e.strerror or e}", None, 2))
    except Exception as e:  # a bug: one line for users, the traceback on request
        if os.environ.get("CVTOOL_DEBUG"):
            raise
        sys.exit(fail(*bug_report(e, sys.argv[1:] if argv is None else argv), 70))
    sys.exit(rv if isinstance(rv, int) else 0)
