"""``python -m DoseSegLogicLib.stoppable_cli ARGS``: the ``doseseg`` command, stopped cleanly through its stdin.

A line on stdin, or stdin closing (the parent is gone), interrupts the command as Ctrl-C
would: the library's KeyboardInterrupt cleanup runs and no partial output stays. This works
the same on Windows, where a process without a console cannot be sent Ctrl-C, as on Linux
and macOS. Standard library only until the command itself is imported.
"""

import _thread
import os
import signal
import sys
import threading
import contextlib


def _stopOnInput(fd: int) -> None:
    """Wait for a byte or the end of stdin (an unbuffered read: no lock held at interpreter exit), then interrupt."""
    with contextlib.suppress(OSError):
        os.read(fd, 1)
    if os.name == "nt":
        _thread.interrupt_main()  # a process without a console cannot be sent Ctrl-C
    else:
        os.kill(os.getpid(), signal.SIGINT)  # a real signal also wakes a sleeping main thread


def main() -> int:
    # A process started from a background shell inherits Ctrl-C ignored; the stop request must still interrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_stopOnInput, args=(sys.stdin.fileno(),), daemon=True).start()
    try:
        from DoseSegLib.cli.main import main as doseseg
    except KeyboardInterrupt:
        return 130
    return doseseg(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
