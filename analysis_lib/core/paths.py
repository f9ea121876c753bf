"""Where the checkout's folders are, found from this file, so that every command and notebook
resolves them the same way from any working folder."""

from pathlib import Path

#: The source checkout: the folder that holds ``analysis_lib/``, ``book/`` and ``data/``.
ROOT = Path(__file__).resolve().parents[2]
#: The book's sources: ``_toc.yml``, ``notebooks/``, ``params/`` and ``executed/``.
BOOK = ROOT / "book"
