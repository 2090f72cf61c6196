"""Run one call in a process of its own, forked from a server that has only imported the
package: nothing a call leaves behind in its process (dynamo's caches and recompile counts,
DSReLU's kernels, warning registries, random states) reaches the next call."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

__all__ = ["IN_PROCESS_ENV", "ChildTraceback", "call_isolated"]

IN_PROCESS_ENV = "DSRELU_CELLS_IN_PROCESS"
"""Set to 1 to run each call in the calling process instead (e.g. to debug a cell)."""

T = TypeVar("T")
Say = Callable[[str], None]


class ChildTraceback(Exception):
    """Where the child process raised: the ``__cause__`` of the exception re-raised here."""


def _context(module: str) -> Any:
    """Forkserver where the platform has it (a fresh interpreter that imports ``module`` once;
    each call forks from it in milliseconds), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])  # no effect once the server runs
    return context


def _readable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _user_facing(error: BaseException) -> BaseException:
    """The user error (one line at the CLI) in ``error``'s chain, else ``error``: pickling
    drops the ``__cause__``/``__context__`` chain the CLI reads that line from."""
    from dsrelu_lightning.errors import UserFacingError

    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, UserFacingError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return error


def _end_with_parent() -> None:
    """End this process when the one that asked for it ends (e.g. ``kill -9`` of the grid),
    as a call in that process would have ended."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


def _child(
    send: Connection, target: Callable[..., Any], args: tuple[Any, ...], environ: dict[str, str]
) -> None:
    def say(text: str) -> None:
        send.send(("say", text, ""))

    os.environ.clear()  # the caller's environment now, not the server's at its start
    os.environ.update(environ)

    threading.Thread(target=_end_with_parent, name="end-with-parent", daemon=True).start()
    try:
        value = target(*args, say=say)
    except BaseException as error:
        send.send(("raised", _readable(_user_facing(error)), traceback.format_exc()))
    else:
        send.send(("returned", value, ""))
    finally:
        send.close()


def call_isolated(target: Callable[..., T], *args: Any, say: Say) -> T:
    """``target(*args, say=...)`` in a fresh process: its return value or its exception
    (re-raised here, the child's traceback as its cause); what it passes to ``say`` is given
    to ``say`` here as it comes. A process that dies without answering raises RuntimeError.
    With ``DSRELU_CELLS_IN_PROCESS=1`` it runs in this process."""
    if os.environ.get(IN_PROCESS_ENV, "0") not in ("", "0"):
        return target(*args, say=say)
    context = _context(target.__module__)
    receive, send = context.Pipe(duplex=False)
    # Not a daemon: a cell's DataLoader starts worker processes of its own.
    process = context.Process(target=_child, args=(send, target, args, dict(os.environ)))
    process.start()
    send.close()
    answered = False
    try:
        while True:
            try:
                kind, value, where = receive.recv()
            except EOFError:
                process.join()
                raise RuntimeError(
                    f"its process ended without an answer (exit code {process.exitcode})"
                ) from None
            if kind == "say":
                say(value)
                continue
            answered = True
            if kind == "returned":
                return value
            raise value from ChildTraceback(where)
    finally:
        receive.close()
        if not answered:  # interrupted here (Ctrl-C): the child goes too
            process.terminate()
        process.join()
