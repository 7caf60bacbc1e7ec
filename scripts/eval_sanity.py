"""Shim for `vlcam eval sanity`; old command lines and torchrun keep working."""

import sys

from vlcam.cli import main as vlcam_main


def main(argv: list[str] | None = None) -> int:
    """Return the exit status of `vlcam eval sanity` with `argv` (default: this process's arguments)."""
    return vlcam_main(["eval", "sanity", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
