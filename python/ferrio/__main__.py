"""``python -m ferrio bench [--quick] [--json] [--loop asyncio|uvloop|both]``"""

from __future__ import annotations

import sys

from ferrio._bench import main  # absolute: worker processes run this file by path

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
