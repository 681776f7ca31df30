"""Writing reports: JSON for machines, markdown tables for people."""

import json
import math
from pathlib import Path
from typing import Any

# A metric shown in a table: its key in the report, its label and how to format its value.
Row = tuple[str, str, str]


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity or NaN: missing values are written as null."""
    return float(value) if math.isfinite(value) else None


def write_json(report: dict[str, Any], path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def format_value(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    return spec.format(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def metrics_by_method_table(methods: dict[str, dict[str, Any]], rows: list[Row]) -> str:
    """One column per method, one line per metric present in the first method's results."""
    first = next(iter(methods.values()))
    lines = [
        [label] + [format_value(results.get(key), spec) for results in methods.values()]
        for key, label, spec in rows
        if key in first
    ]
    return markdown_table(["metric", *methods], lines)
