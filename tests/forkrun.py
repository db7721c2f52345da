"""Run a function in a forked child process, for tests that need real process limits or another user."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Callable


def in_child(work: Callable[[], object], *, file_limit: int | None = None, user: int | None = None) -> str:
    """Run ``work`` in a forked process; ``"ok: <repr of its result>"`` or ``"<ExceptionType>: <message>"``.

    ``file_limit`` caps the size of any file the child writes (RLIMIT_FSIZE: writes
    past it fail with EFBIG, as on a full disk); ``user`` runs the child as that
    uid/gid (so that permission checks apply even when the tests run as root).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        message = "no result"
        try:
            os.close(read)
            if file_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            if user is not None:
                os.setgid(user)
                os.setuid(user)
            message = f"ok: {work()!r}"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message
