"""Command alias: ``python -m runtime.serve`` runs :mod:`runtime.apps.serve` (Triton Inference Server)."""
from runtime.apps.serve import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
