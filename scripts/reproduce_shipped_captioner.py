"""Shim for `vlcam train shipped captioner`; the old command line keeps working."""

import sys

from vlcam.cli import main as vlcam_main


def main(argv: list[str] | None = None) -> int:
    """Return the exit status of `vlcam train shipped captioner` with `argv` (default: this process's)."""
    return vlcam_main(["train", "shipped", "captioner", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
