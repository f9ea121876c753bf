"""``python -m analysis_lib``: the command line (see :mod:`analysis_lib.cli`)."""

from analysis_lib.cli import main

raise SystemExit(main())
