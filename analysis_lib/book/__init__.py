"""The rendered book: executing its chapters when Sphinx builds it, checking it in a browser."""
