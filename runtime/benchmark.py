"""Command alias: ``python -m runtime.benchmark`` runs :mod:`runtime.apps.benchmark` (runtime benchmark)."""
from runtime.apps.benchmark import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
