"""The command line: ``python -m ferrio --help``, ``--version``, ``bench`` and ``watch``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# Absolute imports: worker processes started by forkserver run this file by path.
import ferrio
import ferrio._bench
import ferrio._watch_cli

DESCRIPTION = """\
ferrio bridges sync and async Python through a Rust core: thread pools shaped like
asyncio.to_thread and concurrent.futures, calls from threads back into an event loop,
blocking portals, queues and locks that threads and tasks share, async file I/O and a
process pool that survives crashed workers. Linux only.

The library is used by importing ferrio; this command line runs its tools."""

EPILOG = "Run `python -m ferrio COMMAND --help` for a command's options."


def parser() -> argparse.ArgumentParser:
    """The whole command line: the package's options and one subcommand per tool."""
    p = argparse.ArgumentParser(
        prog="python -m ferrio",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--version", action="version", version=f"ferrio {ferrio.__version__}", help="print ferrio's version and exit"
    )
    commands = p.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    ferrio._bench.add_parser(commands)
    ferrio._watch_cli.add_parser(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit status."""
    args = parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
