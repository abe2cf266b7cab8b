"""Command alias: ``python -m runtime.evaluate`` runs :mod:`runtime.apps.evaluate` (accuracy gate)."""
from runtime.apps.evaluate import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
