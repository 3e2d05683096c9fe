"""Text tables for the command line: a header, a rule of dashes under each column, rows.

Formatted by `tabulate`. The header goes in as the first row, not as tabulate's
`headers`, because tabulate widens every column by two past its header; as a row,
each column is as wide as its widest cell. `services.analysis.report` formats its
tables the same way (services do not import the pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import SEPARATING_LINE, DataRow, Line, TableFormat, tabulate

TEXT_TABLE = TableFormat(
    lineabove=None,
    linebelowheader=Line("", "-", "  ", ""),  # also what SEPARATING_LINE draws
    linebetweenrows=None,
    linebelow=None,
    headerrow=DataRow("", "  ", ""),
    datarow=DataRow("", "  ", ""),
    padding=0,
    with_header_hide=None,
)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None
) -> str:
    """Cells as given (no number parsing), left-aligned unless `align` says "right"."""
    return tabulate(
        [list(header), [SEPARATING_LINE], *rows],
        tablefmt=TEXT_TABLE,
        colalign=align,
        disable_numparse=True,
    )
