"""``export/to_trt.py --max-drop X``: the fastest artifact within X mIoU points of PyTorch.

options.py (the run's options, artifact tags), run.py (the search run: spaces, candidates, writing),
search.py (choosing among scored candidates, no ONNX), scoring.py (held-out scoring, paired CPU
timing), report.py (the JSON / Markdown report). Layer units and sensitivity are calibration/budget.py.
"""
from export.budget.options import BudgetOptions, budget_tag
from export.budget.run import budget_artifacts

__all__ = ["BudgetOptions", "budget_artifacts", "budget_tag"]
