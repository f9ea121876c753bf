"""Progress redrawn in place on a terminal, one line per update in a log."""

import io

from analysis_lib.core.console import Console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_every_update_is_a_line():
    log = io.StringIO()
    console = Console(log)
    console.progress("[train] a: 10 of 100")
    console.line("[train] b: started")
    console.progress("[train] a: 20 of 100")
    console.close()
    assert log.getvalue() == ("[train] a: 10 of 100\n[train] b: started\n"
                              "[train] a: 20 of 100\n")


def test_on_a_terminal_progress_is_redrawn_and_gives_way_to_lines():
    screen = _Terminal()
    console = Console(screen)
    console.progress("a: 10 of 100")
    console.progress("a: 20 of 100")
    console.line("b: done")
    console.progress("a: 30 of 100")
    console.close()
    assert screen.getvalue() == ("\r\x1b[Ka: 10 of 100\r\x1b[Ka: 20 of 100\r\x1b[Kb: done\n"
                                 "\r\x1b[Ka: 30 of 100\n")


def test_a_long_status_is_cut_to_the_terminal(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda: __import__("os").terminal_size(
        (30, 24)))
    screen = _Terminal()
    Console(screen).progress("x" * 100)
    assert screen.getvalue() == "\r\x1b[K" + "x" * 29
