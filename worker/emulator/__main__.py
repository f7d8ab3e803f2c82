"""``python -m worker.emulator [OPTIONS]`` runs the emulator;
``python -m worker.emulator sample-images [OPTIONS]`` runs the sample image server."""

from __future__ import annotations

import sys

from worker.emulator.command import emulator_command, images_command


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "sample-images":
        images_command.main(args[1:], prog_name="python -m worker.emulator sample-images")
    else:
        emulator_command.main(args, prog_name="python -m worker.emulator")


if __name__ == "__main__":
    main()
