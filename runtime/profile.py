"""Command alias: ``python -m runtime.profile`` runs :mod:`runtime.apps.profile` (per-operator CPU time)."""
from runtime.apps.profile import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
