"""``python -m models.zoo``: print the variant table (runtime/zoo.py holds it, torch-free)."""
from __future__ import annotations

from runtime.zoo import VARIANTS, list_variants


def main() -> int:
    """Print the variant table."""
    print(f"{'variant':<22} {'classes':>7} {'crop':>9}  {'published mIoU':>14}")
    for name in list_variants():
        v = VARIANTS[name]
        miou = f"{v.published_miou:.2f}" if v.published_miou else "-"
        print(f"{name:<22} {v.num_classes:>7} {v.crop[0]:>4}x{v.crop[1]:<4}  {miou:>14}")
    return 0
