"""Launcher: ``python -m models.zoo`` prints the variant table (apps/zoo.py; the table is runtime/zoo.py)."""
import sys

from apps.zoo import main

if __name__ == "__main__":
    sys.exit(main())
