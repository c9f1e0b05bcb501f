"""What every CLI shares: one mapping from the project's errors to messages and exit codes."""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from runtime.errors import SmpError

EXIT_OS = 1                         # the system refused (port in use, disk full, permissions)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143               # 128 + SIGTERM, as a shell reports a process it terminated


class Terminated(BaseException):
    """SIGTERM, raised where the process is (like KeyboardInterrupt for SIGINT), so that every
    ``finally`` and cleanup on the way out runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def cli_errors(*, sigterm: bool = False) -> Iterator[None]:
    """``error: <message>`` on stderr and the stage's exit code, instead of a traceback.

    ``sigterm``: SIGTERM unwinds like Ctrl-C (temporary output removed) and exits 143, for
    commands that write files; servers keep their own handler (drain, then exit)."""
    main = threading.current_thread() is threading.main_thread()   # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _terminate) if sigterm and main else None
    try:
        yield
    except SmpError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_OS)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Exit with the install line when a deployment-only install runs a command of an extra."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        click.echo(f"error: {command} needs the {extra} extra (missing: {', '.join(missing)}): "
                   f"pip install torch==2.13.0 && pip install 'smp-export[{extra}]'", err=True)
        sys.exit(SmpError.exit_code)


def configure_logging(verbose: bool) -> None:
    """INFO with ``-v``, else WARNING, on stderr."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def split_names(text: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; None or empty -> ()."""
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())
