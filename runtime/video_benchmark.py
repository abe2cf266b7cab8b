"""Command alias: ``python -m runtime.video_benchmark`` runs :mod:`runtime.apps.video_benchmark` (video pipelining benchmark)."""
from runtime.apps.video_benchmark import main  # noqa: F401

if __name__ == "__main__":
    from runtime.apps.cli import run_cli
    raise SystemExit(run_cli(main))
