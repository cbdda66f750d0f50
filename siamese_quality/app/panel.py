"""The Quality panel: can a model be trusted, and where are the worst samples?

From the top: the Overview (every model's held-out Spearman next to its baseline's
and its counts over the current view; a bar chart of each sample's worst issue, whose
bars filter the grid; see ``overview_section.py``). Then, per model: the model, a line
saying what the grid shows now, the actions and their two sliders, the distribution
of the model's field over the current view (values clipped at the calibration's end
in their own colour), the heat map of where (local models), the held-out numbers,
the calibration (true magnitude vs branch score on held-out images, with the fitted
curve and its band) and the magnitude correlation (predicted vs true).
Charts read stored run results and FiftyOne aggregations (``histogram_values``,
``count``), never loop over samples in Python. While this plugin's jobs are queued
or running, the panel shows their progress and redraws when one ends.
"""

from __future__ import annotations

import json
import math

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone import ViewField as F

from siamese_quality import PLUGIN_NAME

PANEL_NAME = "quality_panel"
HISTOGRAM_BINS = 30
# held-out metrics from fewer images than this are flagged as meaning little
MIN_TRUSTED_IMAGES = 5
# how often the panel looks for new models and for its jobs' progress
POLL_INTERVAL_MS = 3000
DEFAULT_PERCENT = 10.0
# plotly.js 3 ignores string titles: {"text": ...} everywhere
_MARGIN = {"t": 40, "b": 50, "l": 60, "r": 20}
# d3 formats: 3 significant digits in plain decimals (no SI prefixes such as "0.2µ")
_TICKS = ".3~r"
_HOVER = ".4~r"
_LEGEND = {"orientation": "h", "x": 0, "y": -0.25}
_CLIPPED_COLOUR = "#d62728"
CHARTS = ["distribution", "calibration", "correlation", "issues"]
_THICK = {"width": 3}


def _title(text: str) -> dict:
    return {"text": text}


def _markers(name: str, x: list, y: list) -> dict:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": x,
        "y": y,
        "marker": {"size": 6, "opacity": 0.6},
    }


def _line(name: str, x: list, y: list, line: dict, **trace) -> dict:
    """A line trace; ``trace`` adds plotly keys such as ``fill`` and ``showlegend``."""
    return {"type": "scatter", "mode": "lines", "name": name, "x": x, "y": y, "line": line, **trace}


def _scored_field(dataset, fields: list[str]) -> str | None:
    """The calibrated field among a model's fields, once it exists on ``dataset``."""
    from siamese_quality.registry import value_field

    field = value_field(fields)
    return field if field and dataset.has_field(field) else None


def _evidence_traces(calibration: dict, points: dict) -> dict[str, list[dict]]:
    """The calibration and correlation charts' traces of a model's stored results."""
    band = calibration.get("band_x", [])
    magnitudes = points.get("magnitude", [])
    low, high = (min(magnitudes), max(magnitudes)) if magnitudes else (0, 1)
    return {
        "calibration": [
            _line(
                "80 % band", band, calibration.get("band_low", []), {"width": 0}, showlegend=False
            ),
            _line(
                "80 % of held-out copies",
                band,
                calibration.get("band_high", []),
                {"width": 0},
                fill="tonexty",
            ),
            _markers("held-out copies", points.get("score", []), magnitudes),
            _line("calibration curve", calibration.get("x", []), calibration.get("y", []), _THICK),
        ],
        "correlation": [
            _markers("held-out copies", magnitudes, points.get("predicted", [])),
            _line("perfect (predicted = true)", [low, high], [low, high], {"dash": "dash"}),
        ],
    }


def clipped_limits(calibration: dict, distortion: dict) -> list[float]:
    """The ends of a calibration that are clips: a value there may be further out.

    The identity end (no blur, JPEG quality 100) is a real floor, not a clip.
    """
    ys = calibration.get("y") or []
    if not ys:
        return []
    identity = distortion.get("identity")
    ends = sorted({float(min(ys)), float(max(ys))})
    return [end for end in ends if identity is None or not math.isclose(end, identity)]


# the views this panel set, by the uuid of their last stage: the App sends stage uuids
# back unchanged (numbers may change form, 0.0 becoming 0), and a store on the server
# is read by every event, where the panel state an event carries can be one step old
ACTIONS_STORE = "siamese_quality_panel_views"
ACTION_TTL_S = 7 * 24 * 3600


def _stage_uuids(view) -> list[str]:
    return [stage["_uuid"] for stage in view._serialize()]


def _last_stage_uuid(view) -> str | None:
    uuids = _stage_uuids(view)
    return uuids[-1] if uuids else None


def _panel_action(ctx, view) -> dict | None:
    """What the panel's action that set ``view`` was (text, kind, base view), if it was."""
    uuid = _last_stage_uuid(view)
    return ctx.store(ACTIONS_STORE).get(uuid) if uuid else None


def _provenance_note(info) -> str:
    """Where a model's held-out numbers come from, when it is or began as a bundled one."""
    start, bundled = info.training.get("init"), info.training.get("default_model")
    if start:
        return f" Both rows: the same held-out images of this dataset; {start['message']}."
    if bundled:
        return (
            f" Bundled default model v{bundled['version']}: measured on photos it never "
            "trained on when it was built, not on this dataset. To measure (and perhaps "
            f"improve) it here, fine-tune: `sq.train(dataset, task={info.task!r}, "
            "init='default', key=...)`."
        )
    return ""


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _number(value: float) -> str:
    return f"{value:.3g}"


class QualityPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name=PANEL_NAME,
            label="Siamese quality",
            icon="insights",
            surfaces="grid",
            help_markdown="Calibration and correlation evidence of the dataset's quality "
            "models, the distribution of their fields, and quality actions.",
        )

    # --- lifecycle -------------------------------------------------------------------

    def execute(self, ctx):
        from siamese_quality.app.panel_events import is_panel_event, run_panel_event

        return run_panel_event(self, ctx) if is_panel_event(ctx) else super().execute(ctx)

    def on_load(self, ctx):
        from siamese_quality import runs

        keys = runs.list_model_keys(ctx.dataset) if ctx.dataset is not None else []
        ctx.panel.state.models = keys
        current = ctx.panel.state.model
        if keys and current not in keys:
            ctx.panel.state.model = keys[0]
        if ctx.panel.state.percent is None:
            ctx.panel.state.percent = DEFAULT_PERCENT
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.state.model = None
        self.on_load(ctx)

    def on_change_view(self, ctx):
        from siamese_quality.registry import model_fields

        key = self._model_key(ctx)
        field = None if key is None else _scored_field(ctx.dataset, model_fields(ctx.dataset, key))
        if field is None or field != ctx.panel.state.field:
            # a model or its field appeared or changed (an App-side assess ends with a
            # view change, which can come before the next poll): list the models again
            self.on_load(ctx)
            return
        # only the histogram follows the view; its traces keep their lengths, so a patch
        # replaces every bar (no GridFS read of the model's results)
        self._forget_drawn_traces(ctx, ["distribution", "issues"])
        ctx.panel.data.set(  # one patch: each makes the App redraw the charts
            {"distribution": self._distribution(ctx, field), "issues": self._overview(ctx)}
        )
        self._describe_grid(ctx)

    def on_change_current_sample(self, ctx):
        """A sample opened from a view the panel set shows that view's fields (its heat
        map): the App copies the grid's active fields into the sample view as it opens,
        and under load they were the App's defaults again by then (FiftyOne 1.22)."""
        opened = ctx.current_sample is not None
        if opened and not ctx.panel.state.sample_open:
            fields = (_panel_action(ctx, ctx.view) or {}).get("active_fields")
            if fields:
                ctx.ops.set_active_fields(fields=fields)  # the sample view's, once open
        ctx.panel.state.sample_open = opened

    def on_change_model(self, ctx):
        ctx.panel.state.model = ctx.params.get("value")
        self._refresh(ctx)

    def poll(self, ctx):
        """Every few seconds: progress of this plugin's jobs; a full redraw when a model
        appears or changes or a job ends (a worker's training, scoring from Python)."""
        from siamese_quality.jobs import active_jobs, describe_jobs

        if ctx.dataset is None:
            return
        jobs = active_jobs(ctx.dataset)
        text = describe_jobs(jobs)
        if text != (ctx.panel.state.jobs or ""):
            ctx.panel.state.jobs = text
        failures = self._failures_since_opened(ctx)
        if failures != (ctx.panel.state.failures or ""):
            ctx.panel.state.failures = failures
        if self._signature(ctx, jobs) != ctx.panel.state.signature:
            self.on_load(ctx)
        elif ctx.panel.state.drawn_for != _stage_uuids(ctx.view):
            # the App sends a burst of view events, some carrying the view before the
            # last change: whichever answer came last may describe an older view
            self.on_change_view(ctx)

    @staticmethod
    def _failures_since_opened(ctx) -> str:
        """The plugin's jobs that failed since the panel opened, with their errors."""
        import datetime

        from siamese_quality.jobs import failed_jobs

        if ctx.panel.state.opened_at is None:
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            ctx.panel.state.opened_at = now.isoformat()
        since = datetime.datetime.fromisoformat(ctx.panel.state.opened_at)
        return "\n".join(
            f"- {job['label']} **failed**: {job['error']}"
            for job in failed_jobs(ctx.dataset, since)
        )

    # --- data ------------------------------------------------------------------------

    def _model_key(self, ctx) -> str | None:
        from siamese_quality import runs

        key = ctx.panel.state.model
        return key if key and key in runs.list_model_keys(ctx.dataset) else None

    @staticmethod
    def _signature(ctx, jobs: list[dict] | None = None) -> str:
        """What, when it changes, means the charts are out of date: the models (and when
        each was written), the running jobs, and how many samples the field has."""
        from siamese_quality import runs
        from siamese_quality.jobs import active_jobs

        dataset = ctx.dataset
        keys = runs.list_model_keys(dataset)
        jobs = active_jobs(dataset) if jobs is None else jobs
        from siamese_quality.overview import summary_info

        field = ctx.panel.state.field
        return json.dumps(
            {
                "models": [[k, str(dataset.get_run_info(k).timestamp)] for k in keys],
                "summary": summary_info(dataset),
                "jobs": sorted(job["id"] for job in jobs),
                "scored": dataset.count(field) if field and dataset.has_field(field) else None,
            }
        )

    def _refresh(self, ctx):
        """Redraws every chart from the chosen model's stored results.

        The panel's whole data is replaced (``set_panel_data``): data patches merge into
        what the browser holds, and a model's shorter traces kept another's extra points.
        """
        from siamese_quality.app.overview_section import model_rows
        from siamese_quality.registry import confidence_field, model_info

        self._forget_drawn_traces(ctx, CHARTS)
        ctx.panel.state.overview_rows = model_rows(ctx.dataset) if ctx.dataset else []
        key = self._model_key(ctx)
        if key is None:
            ctx.panel.state.field = None
            ctx.panel.state.signature = self._signature(ctx) if ctx.dataset else None
            ctx.ops.set_panel_data({})
            return
        info = model_info(ctx.dataset, key)  # once per refresh: a GridFS read
        ctx.panel.state.summary = self._summary_markdown(info)
        ctx.panel.state.unit = info.unit
        self._set_severity_max(ctx, info.distortion)
        ctx.panel.state.clipped_at = clipped_limits(info.calibration, info.distortion)
        field = _scored_field(ctx.dataset, info.fields)
        ctx.panel.state.field = field
        heatmap = f"{field}_heatmap" if field else None
        ctx.panel.state.heatmap = heatmap if heatmap and ctx.dataset.has_field(heatmap) else None
        ctx.panel.state.local = info.view.get("kind") == "patches"
        ctx.panel.state.sure = bool(field) and ctx.dataset.has_field(confidence_field(field))
        ctx.panel.state.signature = self._signature(ctx)
        ctx.ops.set_panel_data(
            {
                **_evidence_traces(info.calibration, info.held_out_points),
                "distribution": self._distribution(ctx, field),
                "issues": self._overview(ctx),
            }
        )
        self._describe_grid(ctx)

    @staticmethod
    def _forget_drawn_traces(ctx, charts: list[str]) -> None:
        """Drops the browser's copy of these charts' traces from the panel state.

        The App draws ``merge(state, data)`` (lodash: arrays merge index by index), and
        the forms write what they show back into the state. A new model's shorter curve
        then kept the previous model's extra points, whatever ``set_panel_data`` sent.
        """
        for chart in charts:
            if ctx.panel.state.get(chart) is not None:
                ctx.panel.state.set(chart, None)

    @staticmethod
    def _set_severity_max(ctx, distortion: dict) -> None:
        """The threshold slider's range: the largest severity a value can have (two-sided
        tasks reach it on either side); a threshold beyond it is brought back in."""
        from siamese_quality.core.severity import largest_severity

        largest = largest_severity(distortion) if distortion else 1.0
        ctx.panel.state.severity_max = largest
        if (ctx.panel.state.threshold or 0.0) > largest:
            ctx.panel.state.threshold = largest

    def _distribution(self, ctx, field: str | None) -> list[dict]:
        """The histogram of ``field`` over the current view, and the samples that read
        exactly a clipped end of the calibration (always two bars, zero or not)."""
        ctx.panel.state.drawn_for = _stage_uuids(ctx.view)
        ctx.panel.state.field_note = self._field_note(ctx, field)
        if field is None or ctx.panel.state.field_note:
            return []
        counts, edges, _ = ctx.view.histogram_values(field, bins=HISTOGRAM_BINS)
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        limits = (list(ctx.panel.state.clipped_at or []) + [None, None])[:2]
        clipped = [
            0 if limit is None else ctx.view.count_values(F(field) == limit).get(True, 0)
            for limit in limits
        ]
        ctx.panel.state.edges = list(edges)
        ctx.panel.state.scored = int(sum(counts))
        ctx.panel.state.clipped = clipped
        ctx.panel.state.count_step = max(1, math.ceil(max([*counts, 1]) / 6))
        unit = ctx.panel.state.unit or ""
        return [
            {
                "type": "bar",
                "name": f"{field} (samples per bin)",
                "x": centres,
                "y": list(counts),
                "width": widths,
                "hovertemplate": f"%{{x:{_HOVER}}} {unit}: %{{y}} samples<extra></extra>",
            },
            {
                "type": "bar",
                "name": "at the calibration's end (clipped: may be further out)",
                # an empty end has no bar, and no place in the axis range
                "x": [limit if n else None for limit, n in zip(limits, clipped, strict=True)],
                "y": clipped,
                "width": [min(widths) if widths else 1.0] * 2,
                "marker": {"color": _CLIPPED_COLOUR},
                "hovertemplate": f"clipped at %{{x:{_HOVER}}} {unit}: %{{y}}<extra></extra>",
            },
        ]

    @staticmethod
    def _field_note(ctx, field: str | None) -> str | None:
        """Why the current view shows no values of the model's field, if it shows none."""
        if field is None:
            return None
        if not ctx.view.has_field(field):
            return (
                f"**`{field}` is not in the current view**: a stage of the view leaves the "
                "field out (e.g. Select fields). Clear the view, or add the field to it, to "
                "see this model's values and use its actions."
            )
        if not ctx.view.count(field):
            return (
                f"**None of the {ctx.view.count()} samples of the current view has a value "
                f"of `{field}`**: score them, or change the view."
            )
        return None

    def _overview(self, ctx) -> list[dict]:
        """The Overview's table over the current view (state) and its issue bars (data)."""
        from siamese_quality.app.overview_section import (
            issue_counts,
            issue_traces,
            overview_markdown,
        )
        from siamese_quality.overview import summary_fields, summary_info

        rows = ctx.panel.state.overview_rows or []
        ctx.panel.state.overview = overview_markdown(ctx.view, rows)
        info = summary_info(ctx.dataset)
        counts = issue_counts(ctx.view, summary_fields()["issue"]) if info else []
        ctx.panel.state.issue_order = [issue for issue, _ in counts]
        ctx.panel.state.summarized = bool(info)
        if info:
            ctx.panel.state.summary_line = (
                f"Worst issue per sample, from {', '.join(info['models'])} "
                f"(summarized {info['summarized_at'][:16].replace('T', ' ')} UTC). "
                f"{sum(n for _, n in counts)} of the {ctx.view.count()} samples in this view "
                "have one. Click a bar to show them, worst first."
            )
        return issue_traces(counts)

    def _describe_grid(self, ctx) -> None:
        """The state line: what the grid shows now, from this panel's last action if the
        view is still the one it set, else the view's counts alone."""
        field = ctx.panel.state.field
        action = _panel_action(ctx, ctx.view)
        if not len(ctx.view._stages):
            shown = "the whole dataset"
        elif action is not None:
            shown = action["text"]
        else:
            shown = "a view of your own"
        count, total = ctx.view.count(), ctx.dataset.count()
        line = f"**Grid:** {shown}: {count} of {total} samples"
        if field is not None:
            line += f", {ctx.panel.state.scored or 0} with a value of `{field}`"
        clipped = sum(ctx.panel.state.clipped or [])
        if clipped:
            ends = " and ".join(_number(v) for v in ctx.panel.state.clipped_at or [])
            line += (
                f". **{clipped} read exactly {ends} {ctx.panel.state.unit}**, the end of the "
                "calibrated range: the true value may be further out"
            )
        ctx.panel.state.grid = line + "."

    @staticmethod
    def _summary_markdown(info) -> str:
        from siamese_quality.core.texts import PUBLISHED_CORRELATIONS, describe

        published = PUBLISHED_CORRELATIONS.get(info.task)
        metrics, baseline = info.metrics, info.baseline
        jpeg_reader = info.training.get("jpeg_file_reader")
        how = describe(info.view, jpeg_reader is not None)
        lines = [
            f"**{info.key}**: {info.task} in {info.unit}, {how} ({info.backbone})",
            "",
            "| held-out | Pearson | Spearman | MAE |",
            "|---|---|---|---|",
            f"| this model | {_fmt(metrics.get('pearson'))} | {_fmt(metrics.get('spearman'))}"
            f" | {_fmt(metrics.get('mae'))} |",
        ]
        if baseline:
            lines.append(
                f"| {baseline['name']} | {_fmt(baseline.get('pearson'))} | "
                f"{_fmt(baseline.get('spearman'))} | {_fmt(baseline.get('mae'))} |"
            )
        if jpeg_reader:  # its own rows: the same held-out images, unsaved and saved
            read = jpeg_reader.get("metrics", {})
            lines.append(
                f"| its reader of JPEG files | {_fmt(read.get('pearson'))} | "
                f"{_fmt(read.get('spearman'))} | {_fmt(read.get('mae'))} |"
            )
            saved = jpeg_reader.get("saved_metrics")
            if saved:  # models trained before it was measured have none
                lines.append(
                    f"| its reader, copies saved as JPEG {jpeg_reader['saved_quality']} | "
                    f"{_fmt(saved.get('pearson'))} | {_fmt(saved.get('spearman'))} | "
                    f"{_fmt(saved.get('mae'))} |"
                )
        start = info.training.get("init")
        if start:
            begun = start.get("start_metrics", {})
            lines.append(
                f"| {start['from']}, before fine-tuning | {_fmt(begun.get('pearson'))} | "
                f"{_fmt(begun.get('spearman'))} | {_fmt(begun.get('mae'))} |"
            )
        if published is not None:
            lines.append(f"| published write-up | {published:.3f} | - | - |")
        lines += ["", f"Held-out numbers rest on {info.held_out_images} image(s)."]
        lines[-1] += _provenance_note(info)
        if info.held_out_images < MIN_TRUSTED_IMAGES:
            lines[-1] += (
                f" **Too few to mean much** (fewer than {MIN_TRUSTED_IMAGES}): train on more "
                "images, or re-measure with the evaluate operator on images the model never saw."
            )
        return "\n".join(lines)

    # --- actions ---------------------------------------------------------------------

    @staticmethod
    def _base_view(ctx, kind: str):
        """The view an action starts from: the user's view, except that an action of the
        same kind as the panel's last one replaces it (a second "Show worst %" or bar
        click does not narrow the first); filters the user or a bar click set stay."""
        import fiftyone as fo

        action = _panel_action(ctx, ctx.view)
        if action is not None and action["kind"] == kind:
            return fo.DatasetView._build(ctx.dataset, action["base"])
        return ctx.view

    def _set_view(
        self, ctx, base, view, text: str, kind: str, active_fields: list[str] | None = None
    ) -> None:
        """Shows ``view`` in the grid and remembers what it is, for the state line (and
        which fields a sample opened from it shows)."""
        action = {"text": text, "kind": kind, "base": base._serialize()}
        if active_fields:
            action["active_fields"] = active_fields
        ctx.store(ACTIONS_STORE).set(_last_stage_uuid(view), action, ttl=ACTION_TTL_S)
        ctx.ops.set_view(view)

    @staticmethod
    def _min_confidence(ctx) -> tuple[float | None, str]:
        """The confidence slider's minimum for the actions (None: every sample), and how
        the state line says it; only for a model that writes its confidence."""
        value = ctx.panel.state.min_confidence if ctx.panel.state.sure else None
        if not value:
            return None, ""
        return float(value), f", read with confidence ≥ {float(value):g}"

    def worst_first(self, ctx, note: str = "", active_fields: list[str] | None = None):
        from siamese_quality import actions

        field, base = ctx.panel.state.field, self._base_view(ctx, "order")
        sure, said = self._min_confidence(ctx)
        view = actions.worst_first(base, field, min_confidence=sure)
        text = f"worst first by `{field}`{said}{note}"
        self._set_view(ctx, base, view, text, "order", active_fields)

    def best_first(self, ctx):
        from siamese_quality import actions

        field, base = ctx.panel.state.field, self._base_view(ctx, "order")
        sure, said = self._min_confidence(ctx)
        view = actions.worst_first(base, field, best_first=True, min_confidence=sure)
        self._set_view(ctx, base, view, f"best first by `{field}`{said}", "order")

    def show_worst_percent(self, ctx):
        from siamese_quality import actions

        field, base = ctx.panel.state.field, self._base_view(ctx, "order")
        percent = float(ctx.panel.state.percent or DEFAULT_PERCENT)
        sure, said = self._min_confidence(ctx)
        view = actions.worst_percent(base, field, percent, min_confidence=sure)
        text = f"the worst {percent:g} % by `{field}`{said}"
        self._set_view(ctx, base, view, text, "order")

    def tag_beyond(self, ctx):
        from siamese_quality import actions

        field = ctx.panel.state.field
        threshold = float(ctx.panel.state.threshold or 0.0)
        tag = f"worst_{field}"
        sure, said = self._min_confidence(ctx)
        count = actions.tag_beyond(ctx.view, field, threshold, tag, min_confidence=sure)
        ctx.ops.notify(
            f"Tagged {count} samples of this view '{tag}' (severity beyond "
            f"{threshold:g} {ctx.panel.state.unit}{said})"
        )
        ctx.ops.reload_dataset()

    def clear_filter(self, ctx):
        ctx.ops.clear_view()

    def on_bar_click(self, ctx):
        from siamese_quality import actions

        field = ctx.panel.state.field
        edges = ctx.panel.state.edges or []
        index = ctx.params.get("idx")
        if index is None or not 0 <= index < len(edges) - 1:
            return
        low, high = edges[index], edges[index + 1]
        base = self._base_view(ctx, "range")
        view = actions.in_range(base, field, low, high)
        text = f"`{field}` from {_number(low)} to {_number(high)} {ctx.panel.state.unit or ''}"
        self._set_view(ctx, base, view, text, "range")

    def on_issue_click(self, ctx):
        from siamese_quality.overview import worst_of_issue

        issues = ctx.panel.state.issue_order or []
        index = ctx.params.get("idx")
        if index is None or not 0 <= index < len(issues):
            return
        base = self._base_view(ctx, "issue")
        view = worst_of_issue(base, issues[index])
        text = f"samples whose worst issue is `{issues[index]}`, worst first"
        self._set_view(ctx, base, view, text, "issue")

    def open_summarize(self, ctx):
        ctx.prompt(f"{PLUGIN_NAME}/summarize_quality")

    def show_heatmaps(self, ctx):
        """Worst first, with the model's heat maps drawn over the grid's images (and the
        sample a click opens). Opening a sample from here (``open_sample``) left the App's
        sample view without the dataset's label fields in FiftyOne 1.22."""
        heatmap = ctx.panel.state.heatmap
        if not heatmap:
            return
        self.worst_first(ctx, note=", with its heat maps", active_fields=[heatmap])
        # after the view: the App sets the sidebar's active fields again on a view change,
        # and the maps stayed off (in the sample view too) when that came second
        ctx.ops.set_active_fields(fields=[heatmap])

    def open_assess(self, ctx):
        ctx.prompt(f"{PLUGIN_NAME}/assess_quality")

    def open_train(self, ctx):
        ctx.prompt(f"{PLUGIN_NAME}/train_quality_model")

    def open_score(self, ctx):
        ctx.prompt(f"{PLUGIN_NAME}/score_quality", params={"keys": [ctx.panel.state.model]})

    # --- layout ----------------------------------------------------------------------

    def render(self, ctx):
        panel = types.Object()
        keys = ctx.panel.state.models or []
        if ctx.dataset is not None and ctx.dataset.media_type != "image":
            panel.md("siamese_quality works on image datasets only.", name="not_images")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        panel.view("poll", types.TimerView(interval=POLL_INTERVAL_MS, on_interval=self.poll))
        if ctx.panel.state.failures:
            panel.md(f"**Jobs that failed:**\n\n{ctx.panel.state.failures}", name="failures")
        if ctx.panel.state.jobs:
            panel.md(f"**Jobs running or waiting:**\n\n{ctx.panel.state.jobs}", name="jobs")
        if not keys:
            panel.md(
                "### No quality model yet\n"
                "Assess these images with the bundled default models: every task (blur, "
                "noise, JPEG, pixelation, brightness, contrast, tilt) scored in real units, "
                "no training. Or train a self-supervised model on these images: it learns, "
                "without labels, how blurred, tilted or dark they are.",
                name="empty",
            )
            panel.btn(
                "assess",
                label="Assess with the default models",
                on_click=self.open_assess,
                variant="contained",
            )
            panel.btn("train", label="Train a model", on_click=self.open_train)
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        self._render_overview(ctx, panel)
        panel.md("#### Per model", name="per_model")
        choices = types.DropdownView()
        for key in keys:
            choices.add_choice(key, label=key)
        panel.enum(
            "model",
            choices.values(),
            default=ctx.panel.state.model,
            label="Model",
            view=choices,
            on_change=self.on_change_model,
        )
        if ctx.panel.state.field is None:
            panel.md(
                "### Not scored yet\nThis model has not written a field on this dataset.",
                name="not_scored",
            )
            panel.btn(
                "score", label="Score the dataset", on_click=self.open_score, variant="contained"
            )
        elif ctx.panel.state.field_note:
            panel.md(ctx.panel.state.field_note, name="field_note")
        else:
            self._render_actions(ctx, panel)
        panel.md(ctx.panel.state.summary or "", name="summary")
        self._render_evidence(ctx, panel)
        return types.Property(panel, view=types.GridView(orientation="vertical"))

    def _render_overview(self, ctx, panel) -> None:
        """The table of every model over the current view, and the issues bar chart."""
        panel.md(f"#### Overview\n\n{ctx.panel.state.overview or ''}", name="overview")
        if not ctx.panel.state.summarized:
            panel.btn(
                "summarize",
                label="Summarize issues",
                on_click=self.open_summarize,
                variant="contained",
            )
            return
        panel.md(ctx.panel.state.summary_line or "", name="summary_line")
        panel.plot(
            "issues",
            on_click=self.on_issue_click,
            layout={
                "title": _title("Worst issue per sample, current view (click a bar to show it)"),
                "xaxis": {"title": _title("model (issue)"), "type": "category"},
                "yaxis": {"title": _title("samples"), "tickformat": "d", "rangemode": "tozero"},
                "margin": _MARGIN,
                "height": 260,
            },
        )
        panel.btn("summarize", label="Summarize again", on_click=self.open_summarize)

    def _render_heatmap(self, ctx, panel) -> None:
        """Where the model's heat maps are, or how to get them (local models only)."""
        field, heatmap = ctx.panel.state.field, ctx.panel.state.heatmap
        if heatmap:
            panel.md(
                f"**Heat map:** `{heatmap}` shows where each image reads {field}, patch by "
                f"patch, in {ctx.panel.state.unit}. Open a sample to see it over the image.",
                name="heatmap_note",
            )
            panel.btn(
                "show_heatmaps",
                label="Worst first, with heat maps",
                on_click=self.show_heatmaps,
            )
        elif ctx.panel.state.local:
            panel.md(
                "**Heat maps:** score again with *Heat maps of where* to see where in each "
                f"image the {field} is.",
                name="heatmap_note",
            )

    def _render_actions(self, ctx, panel) -> None:
        """The state line, the actions, their sliders and the distribution they act on."""
        unit = ctx.panel.state.unit or ""
        panel.md(ctx.panel.state.grid or "", name="grid_state")
        actions = panel.h_stack("actions", gap=1)
        actions.btn("worst_first", label="Worst first", on_click=self.worst_first)
        actions.btn("best_first", label="Best first", on_click=self.best_first)
        actions.btn("show_worst", label="Show worst %", on_click=self.show_worst_percent)
        actions.btn("tag", label="Tag beyond threshold", on_click=self.tag_beyond)
        actions.btn("clear", label="Clear filter", on_click=self.clear_filter)
        # Top-level sliders without on_change: the slider writes its value to the panel
        # state (state.percent, state.threshold) when the user lets go or uses the keys,
        # and the actions read it there. A handler that wrote the value back re-keyed the
        # slider under the pointer and looped.
        panel.float(
            "percent",
            default=DEFAULT_PERCENT,
            min=1.0,
            max=100.0,
            label="Worst % (for 'Show worst %')",
            view=types.SliderView(
                label_position="top",
                value_precision=0,
                view_multiple_of=1,
                value_label_display="auto",
            ),
        )
        largest = ctx.panel.state.severity_max or 1.0
        panel.float(
            "threshold",
            default=0.0,
            min=0.0,
            max=largest,
            label=f"Tag threshold: severity in {unit} (for 'Tag beyond threshold')",
            view=types.SliderView(
                label_position="top",
                value_precision=2,
                view_multiple_of=largest / 100,
                value_label_display="auto",
            ),
        )
        if ctx.panel.state.sure:
            from siamese_quality.core.tilt import LINES_SURE
            from siamese_quality.registry import confidence_field

            sure_field = confidence_field(ctx.panel.state.field)
            # the App stores the default in the state: the actions start among the samples
            # read surely (a texture's tilt is arbitrary and would lead "worst first")
            panel.float(
                "min_confidence",
                default=LINES_SURE,
                min=0.0,
                max=1.0,
                label=f"Only samples read with {sure_field} at least "
                f"(0: all; {LINES_SURE:g}, the start, keeps tilts read off long lines that agree)",
                view=types.SliderView(
                    label_position="top",
                    value_precision=2,
                    view_multiple_of=0.05,
                    value_label_display="auto",
                ),
            )
        self._render_distribution(ctx, panel)
        self._render_heatmap(ctx, panel)

    def _render_distribution(self, ctx, panel) -> None:
        field, unit = ctx.panel.state.field, ctx.panel.state.unit or ""
        panel.plot(
            "distribution",
            on_click=self.on_bar_click,
            layout={
                "title": _title(f"{field} over the current view (click a bar to filter)"),
                "xaxis": {
                    "title": _title(f"{field}: {unit}"),
                    "tickformat": _TICKS,
                    "hoverformat": _HOVER,
                },
                "yaxis": {
                    "title": _title("samples"),
                    "tickformat": "d",
                    "dtick": ctx.panel.state.count_step or 1,
                    "rangemode": "tozero",
                },
                "margin": _MARGIN,
                "height": 300,
                "bargap": 0.05,
                "barmode": "overlay",
                "showlegend": True,
                "legend": _LEGEND,
            },
        )

    def _render_evidence(self, ctx, panel) -> None:
        unit = ctx.panel.state.unit or ""
        # plots stay at the top level: their data is looked up by property path
        for name, title, x_title, y_title in (
            (
                "calibration",
                "Calibration: true magnitude vs branch score",
                "branch score (raw)",
                f"true magnitude: {unit}",
            ),
            (
                "correlation",
                "Magnitude correlation (held-out images)",
                f"true magnitude: {unit}",
                f"predicted magnitude: {unit}",
            ),
        ):
            panel.plot(
                name,
                layout={
                    "title": _title(title),
                    "xaxis": {"title": _title(x_title), "tickformat": _TICKS},
                    "yaxis": {"title": _title(y_title), "tickformat": _TICKS},
                    "margin": {**_MARGIN, "b": 90},
                    "height": 360,
                    "showlegend": True,
                    "legend": _LEGEND,
                },
            )
