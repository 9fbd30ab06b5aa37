"""Regenerate the JSON Schemas shipped in the package (development only).

    python scripts/generate_schemas.py          # rewrites hbacli/schema_files/ and schemas/
    python scripts/generate_schemas.py DIR      # writes them into DIR instead

Run it from a checkout after changing a file model (``hbacli.schemas.SCHEMA_MODELS``); the
models are imported from this checkout, not from an installed hbacli, and the files are
written into the checkout's package folder, from where the wheel ships them as package data,
and into ``schemas/`` at the repository's root, where people browsing the repository look.
Both are generated from the one source, the models; ``tests/test_schemas.py`` fails while
either copy and its model disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's hbacli, whatever is installed

from hbacli.schemas import SCHEMA_PACKAGE_DIR, write_schemas  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    directories = [Path(argv[0])] if argv else [ROOT / "hbacli" / SCHEMA_PACKAGE_DIR,
                                                 ROOT / "schemas"]
    for directory in directories:
        for path in write_schemas(directory):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
