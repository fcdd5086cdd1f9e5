"""`python -m diffnas` runs the command-line interface."""

from diffnas.cli import main

raise SystemExit(main())
