"""``python -m distloop ...``: the same command line as ``distloop ...``."""

from distloop.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
