"""Command alias: ``python -m runtime.segment`` runs :mod:`runtime.apps.segment` (segment image files)."""
from runtime.apps.segment import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
