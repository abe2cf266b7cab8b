"""Command alias: ``python -m runtime.video_demo`` runs :mod:`runtime.apps.video_demo` (live video demo)."""
from runtime.apps.video_demo import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
