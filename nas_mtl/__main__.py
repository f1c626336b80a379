"""``python -m nas_mtl`` is ``nas-mtl``; torchrun starts its ranks this way (``-m nas_mtl``)."""

from __future__ import annotations

import sys

from nas_mtl.cli import main

if __name__ == "__main__":
    sys.exit(main())
