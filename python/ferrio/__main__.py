"""``python -m ferrio bench [--quick] [--json] [--loop asyncio|uvloop|both]``"""

from __future__ import annotations

import sys

from ._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
