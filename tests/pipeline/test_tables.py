"""The command line's text tables: one look, columns no wider than their widest cell."""

from __future__ import annotations

from pipeline.tables import format_table
from services.analysis import report


def test_header_rule_and_alignment() -> None:
    text = format_table(("name", "n"), [("adam", "3"), ("sgd", "12")], ("left", "right"))
    assert text.split("\n") == [
        "name   n",
        "----  --",
        "adam   3",
        "sgd   12",
    ]


def test_cells_are_not_parsed_as_numbers() -> None:
    text = format_table(("params",), [("9,248",), ("0.50",), ("1e3",)])
    assert text.split("\n")[2:] == ["9,248", "0.50", "1e3"]


def test_the_services_tables_look_the_same() -> None:
    """services.analysis.report keeps its own copy of the format (services do not import
    the pipeline); the two must not drift apart."""
    header, rows = ["rank", "group", ""], [["1", "adam", "0.9 ±0.1"], ["2", "", ""]]
    assert report._table(header, rows) == format_table(header, rows).split("\n")
