"""The panel's Overview: every model at once, and the issues of the current view.

Its table reads each model's stored evidence once per redraw (:func:`model_rows`), then
only FiftyOne aggregations over the current view, so a view change costs two counts
per model and no GridFS read.
"""

from __future__ import annotations

from fiftyone import ViewField as F

# "beyond the threshold": a quarter of the model's trained range, the scale every model
# shares (core.severity.relative_severity)
OVERVIEW_THRESHOLD = 0.25


def model_rows(dataset) -> list[dict]:
    """Per model: key, unit, value field (None until scored), held-out Spearman, the
    baseline's, and its distortion (for the severity rule)."""
    from siamese_quality import runs
    from siamese_quality.registry import model_info, value_field

    rows = []
    for key in runs.list_model_keys(dataset):
        info = model_info(dataset, key)
        field = value_field(info.fields)
        baseline = info.baseline or {}
        rows.append(
            {
                "key": key,
                "unit": info.unit,
                "field": field if field and dataset.has_field(field) else None,
                "spearman": info.metrics.get("spearman"),
                "baseline": baseline.get("spearman"),
                "baseline_name": baseline.get("name"),
                "distortion": info.distortion,
            }
        )
    return rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _view_cells(view, row: dict) -> tuple[str, str]:
    """(samples scored, share beyond the threshold) of one model over ``view``."""
    from siamese_quality.core.severity import relative_severity

    field = row["field"]
    if field is None:
        return "not scored yet", "-"
    if not view.has_field(field):
        return "field not in this view", "-"
    scored = view.count(field)
    if not scored or not row["distortion"]:
        return str(scored), "-"
    worse = relative_severity(row["distortion"], F(field)) > OVERVIEW_THRESHOLD
    beyond = view.match(F(field).exists() & worse).count()
    return str(scored), f"{100 * beyond / scored:.0f} % ({beyond})"


def overview_markdown(view, rows: list[dict]) -> str:
    """The table of all models over ``view``."""
    lines = [
        "| model | unit | held-out Spearman | baseline's | scored in this view "
        f"| beyond {OVERVIEW_THRESHOLD:g} of its range |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        scored, beyond = _view_cells(view, row)
        baseline = _fmt(row["baseline"])
        if row["baseline_name"]:
            baseline += f" ({row['baseline_name']})"
        lines.append(
            f"| {row['key']} | {row['unit']} | {_fmt(row['spearman'])} | {baseline} "
            f"| {scored} | {beyond} |"
        )
    return "\n".join(lines)


def issue_counts(view, issue_field: str) -> list[tuple[str, int]]:
    """(issue, samples of ``view`` whose worst issue it is), most common first."""
    if not view.has_field(issue_field):
        return []
    counts = view.count_values(issue_field)
    return sorted(
        ((issue, n) for issue, n in counts.items() if issue is not None),
        key=lambda item: (-item[1], item[0]),
    )


def issue_traces(counts: list[tuple[str, int]]) -> list[dict]:
    """The bar chart of issues (one bar per issue, in the order of ``counts``)."""
    if not counts:
        return []
    return [
        {
            "type": "bar",
            "name": "samples whose worst issue this is",
            "x": [issue for issue, _ in counts],
            "y": [n for _, n in counts],
            "hovertemplate": "%{x}: %{y} samples (click: show them, worst first)<extra></extra>",
        }
    ]
