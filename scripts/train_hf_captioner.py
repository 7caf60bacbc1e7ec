"""Shim for `vlcam train hf-captioner`; old command lines and torchrun keep working."""

import sys

from vlcam.cli import main as vlcam_main


def main(argv: list[str] | None = None) -> int:
    """Return the exit status of `vlcam train hf-captioner` with `argv` (default: this process's arguments)."""
    return vlcam_main(["train", "hf-captioner", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
