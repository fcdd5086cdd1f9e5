"""`python -m diffnas` runs the command-line interface."""

from diffnas.cli import main

if __name__ == "__main__":  # spawned worker processes import this module too
    raise SystemExit(main())
