"""What a long command prints: lines that stay, and progress that on a terminal is redrawn in
place on the last line (in a log, where nothing can be redrawn, each update is a line)."""

import shutil
import sys
from typing import TextIO


class Console:
    """Lines and in-place progress on one stream (standard output by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._showing = False

    def line(self, text: str) -> None:
        """A line that stays (the progress line, if shown, gives way to it)."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, text: str) -> None:
        """On a terminal, replace the progress line with ``text`` (cut to the terminal's
        width); elsewhere, a line."""
        if not self.live:
            self.line(text)
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        self.stream.write("\r\033[K" + text[:width])
        self.stream.flush()
        self._showing = True

    def close(self) -> None:
        """End a progress line that is showing, so that what follows starts a line."""
        if self._showing:
            self.stream.write("\n")
            self.stream.flush()
            self._showing = False

    def _clear(self) -> None:
        if self._showing:
            self.stream.write("\r\033[K")
            self._showing = False
