"""runtime.tables.format_table: fixed-width terminal tables and Markdown pipe tables."""
from __future__ import annotations

import pytest

from runtime.tables import format_table

HEAD = ["backend", "ms/tile", "status"]
ROWS = [["pytorch", "88.1", "reference"], ["model_int8_ort.onnx", "8.1", "pass"]]


def test_columns_as_wide_as_their_widest_cell_two_spaces_apart_header_underlined():
    assert format_table(ROWS, HEAD).splitlines() == [
        "backend              ms/tile  status   ",
        "-------------------  -------  ---------",
        "pytorch              88.1     reference",
        "model_int8_ort.onnx  8.1      pass     "]


def test_the_last_align_letter_holds_for_the_remaining_columns():
    assert format_table(ROWS, HEAD, align="lr").splitlines() == [
        "backend              ms/tile     status",
        "-------------------  -------  ---------",
        "pytorch                 88.1  reference",
        "model_int8_ort.onnx      8.1       pass"]
    assert format_table(ROWS, HEAD, align="lr") == format_table(ROWS, HEAD, align="lrr")


def test_without_rule_or_header():
    assert format_table([["a", "bb"]], ["xyz", "w"], rule=False) == "xyz  w \na    bb"
    assert format_table([["a", "bb"], ["ccc", "d"]]) == "a    bb\nccc  d "


def test_a_row_shorter_than_the_header_keeps_the_columns_it_has():
    lines = format_table([["8.6", "skipped: no GPU"], ["10.3", "yes", "typed"]], ["TensorRT", "implicit", "route"])
    assert lines.splitlines()[2] == "8.6       skipped: no GPU"
    assert lines.splitlines()[3] == "10.3      yes              typed"


def test_markdown_keeps_the_cells_and_marks_right_aligned_columns():
    assert format_table(ROWS, HEAD, markdown=True).splitlines() == [
        "| backend | ms/tile | status |", "|---|---|---|",
        "| pytorch | 88.1 | reference |", "| model_int8_ort.onnx | 8.1 | pass |"]
    assert format_table([["4", "12.3"]], ["clients", "frames/s"], align="r", markdown=True).splitlines()[1] == \
        "|---:|---:|"
    assert format_table([], ["class", "a"], align="lr", markdown=True) == "| class | a |\n|---|---:|"


def test_an_align_other_than_l_and_r_is_refused():
    for align in ("", "c", "lx"):
        with pytest.raises(ValueError, match="letters l and r"):
            format_table(ROWS, HEAD, align=align)
