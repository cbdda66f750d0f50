"""The Quality panel: can a model be trusted, and where are the worst samples?

Shows, for the chosen model, its calibration (true magnitude vs branch score on
held-out images, with the fitted curve and its band), its magnitude correlation
(predicted vs true, next to the classical baseline's numbers), and the
distribution of its field over the current view, with one-click actions. Charts
read stored run results and FiftyOne aggregations (``histogram_values``,
``bounds``), never loop over samples in Python.
"""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from siamese_quality import PLUGIN_NAME

PANEL_NAME = "quality_panel"
HISTOGRAM_BINS = 30
# held-out metrics from fewer images than this are flagged as meaning little
MIN_TRUSTED_IMAGES = 5
# plotly.js 3 ignores string titles: {"text": ...} everywhere
_MARGIN = {"t": 40, "b": 50, "l": 60, "r": 20}


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


def _scored_field(dataset, config: dict) -> str | None:
    """The calibrated field a model's run config names, once it exists on ``dataset``."""
    fields = config.get("fields") or []
    suffixes = ("_raw", "_fingerprint", "_patches")
    scored = [f for f in fields if not f.endswith(suffixes) and dataset.has_field(f)]
    return scored[0] if scored else None


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
                "80 % band", band, calibration.get("band_high", []), {"width": 0}, fill="tonexty"
            ),
            _markers("held-out copies", points.get("score", []), magnitudes),
            _line("calibration", calibration.get("x", []), calibration.get("y", []), {"width": 3}),
        ],
        "correlation": [
            _markers("held-out copies", magnitudes, points.get("predicted", [])),
            _line("perfect", [low, high], [low, high], {"dash": "dash"}),
        ],
    }


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


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

    def on_load(self, ctx):
        from siamese_quality import runs

        keys = runs.list_model_keys(ctx.dataset) if ctx.dataset is not None else []
        ctx.panel.state.models = keys
        current = ctx.panel.state.model
        if keys and current not in keys:
            ctx.panel.state.model = keys[0]
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.state.model = None
        self.on_load(ctx)

    def on_change_view(self, ctx):
        from siamese_quality import runs

        key = self._model_key(ctx)
        field = (
            None if key is None else _scored_field(ctx.dataset, runs.run_config(ctx.dataset, key))
        )
        if field is None or field != ctx.panel.state.field:
            self._refresh(ctx)  # the model's field appeared or changed: redraw everything
            return
        # only the histogram follows the view; its one trace always has HISTOGRAM_BINS
        # bars, so a patch replaces every bar (no GridFS read of the model's results)
        ctx.panel.data.distribution = self._distribution(ctx, field)

    def on_change_model(self, ctx):
        ctx.panel.state.model = ctx.params.get("value")
        self._refresh(ctx)

    # --- data ------------------------------------------------------------------------

    def _model_key(self, ctx) -> str | None:
        from siamese_quality import runs

        key = ctx.panel.state.model
        return key if key and key in runs.list_model_keys(ctx.dataset) else None

    def _refresh(self, ctx):
        """Redraws every chart from the chosen model's stored results.

        The panel's whole data is replaced (``set_panel_data``): data patches merge into
        what the browser holds, and a model's shorter traces kept another's extra points.
        """
        from siamese_quality import runs

        key = self._model_key(ctx)
        if key is None:
            ctx.panel.state.field = None
            ctx.ops.set_panel_data({})
            return
        config = runs.run_config(ctx.dataset, key)
        results = runs.load_results(ctx.dataset, key)  # once per refresh: a GridFS read
        evaluation = results.get("evaluation") or {}
        held_out_images = len(set((evaluation.get("points") or {}).get("image") or []))
        ctx.panel.state.summary = self._summary_markdown(
            key,
            config,
            evaluation.get("metrics") or {},
            evaluation.get("baseline") or {},
            held_out_images,
        )
        ctx.panel.state.unit = config["unit"]
        distortion = config.get("distortion") or {}
        # the largest severity a value can have: two-sided tasks reach it on either side
        identity = distortion.get("identity", distortion.get("low", 0.0))
        ctx.panel.state.severity_max = float(
            max(
                abs(distortion.get("high", 1.0) - identity),
                abs(identity - distortion.get("low", 0.0)),
            )
        )
        field = _scored_field(ctx.dataset, config)
        ctx.panel.state.field = field
        ctx.ops.set_panel_data(
            {
                **_evidence_traces(
                    results.get("calibration") or {}, evaluation.get("points") or {}
                ),
                "distribution": self._distribution(ctx, field),
            }
        )

    def _distribution(self, ctx, field: str | None) -> list[dict]:
        """The histogram of ``field`` over the current view (one bar trace)."""
        if field is None:
            return []
        counts, edges, _ = ctx.view.histogram_values(field, bins=HISTOGRAM_BINS)
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ctx.panel.state.edges = list(edges)
        ctx.panel.state.scored = int(sum(counts))
        return [
            {
                "type": "bar",
                "name": field,
                "x": centres,
                "y": list(counts),
                "width": [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)],
            }
        ]

    @staticmethod
    def _summary_markdown(key, config, metrics, baseline, held_out_images: int) -> str:
        from siamese_quality.texts import PUBLISHED_CORRELATIONS, describe

        published = PUBLISHED_CORRELATIONS.get(config["task"])
        lines = [
            f"**{key}**: {config['task']} in {config['unit']}, {describe(config['view'])} "
            f"({config['backbone']})",
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
        if published is not None:
            lines.append(f"| published write-up | {published:.3f} | - | - |")
        lines += ["", f"Held-out numbers rest on {held_out_images} image(s)."]
        if held_out_images < MIN_TRUSTED_IMAGES:
            lines[-1] += (
                f" **Too few to mean much** (fewer than {MIN_TRUSTED_IMAGES}): train on more "
                "images, or re-measure with the evaluate operator on images the model never saw."
            )
        return "\n".join(lines)

    # --- actions ---------------------------------------------------------------------

    def _set_view(self, ctx, view):
        ctx.ops.set_view(view)

    def worst_first(self, ctx):
        from siamese_quality import actions

        self._set_view(ctx, actions.worst_first(ctx.view, ctx.panel.state.field))

    def best_first(self, ctx):
        from siamese_quality import actions

        self._set_view(ctx, actions.worst_first(ctx.view, ctx.panel.state.field, best_first=True))

    def show_worst_percent(self, ctx):
        from siamese_quality import actions

        percent = float(ctx.panel.state.percent or 10.0)
        self._set_view(ctx, actions.worst_percent(ctx.view, ctx.panel.state.field, percent))

    def tag_beyond(self, ctx):
        from siamese_quality import actions

        field = ctx.panel.state.field
        threshold = float(ctx.panel.state.threshold or 0.0)
        tag = f"worst_{field}"
        count = actions.tag_beyond(ctx.view, field, threshold, tag)
        ctx.ops.notify(f"Tagged {count} samples '{tag}'")
        ctx.ops.reload_dataset()

    def clear_filter(self, ctx):
        ctx.ops.clear_view()

    def on_bar_click(self, ctx):
        from siamese_quality import actions

        edges = ctx.panel.state.edges or []
        index = ctx.params.get("idx")
        if index is None or not 0 <= index < len(edges) - 1:
            return
        view = actions.in_range(ctx.view, ctx.panel.state.field, edges[index], edges[index + 1])
        self._set_view(ctx, view)

    def on_percent(self, ctx):
        ctx.panel.state.percent = ctx.params.get("value")

    def on_threshold(self, ctx):
        ctx.panel.state.threshold = ctx.params.get("value")

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
        if not keys:
            panel.md(
                "### No quality model yet\n"
                "Train a self-supervised model on these images: it learns, without "
                "labels, how blurred, tilted or dark an image is, in real units.",
                name="empty",
            )
            panel.btn("train", label="Train a model", on_click=self.open_train, variant="contained")
            return types.Property(panel, view=types.GridView(orientation="vertical"))

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
        panel.md(ctx.panel.state.summary or "", name="summary")

        unit = ctx.panel.state.unit or ""
        # plots stay at the top level: their data is looked up by property path
        panel.plot(
            "calibration",
            layout={
                "title": _title("Calibration: true magnitude vs branch score"),
                "xaxis": {"title": _title("branch score (raw)")},
                "yaxis": {"title": _title(f"true magnitude: {unit}")},
                "margin": _MARGIN,
                "height": 320,
            },
        )
        panel.plot(
            "correlation",
            layout={
                "title": _title("Magnitude correlation (held-out images)"),
                "xaxis": {"title": _title(f"true magnitude: {unit}")},
                "yaxis": {"title": _title(f"predicted magnitude: {unit}")},
                "margin": _MARGIN,
                "height": 320,
            },
        )

        field = ctx.panel.state.field
        if field is None:
            panel.md(
                "### Not scored yet\nThis model has not written a field on this dataset.",
                name="not_scored",
            )
            panel.btn(
                "score", label="Score the dataset", on_click=self.open_score, variant="contained"
            )
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        panel.plot(
            "distribution",
            on_click=self.on_bar_click,
            layout={
                "title": _title(
                    f"{field} over the current view "
                    f"({ctx.panel.state.scored or 0} scored; click a bar to filter)"
                ),
                "xaxis": {"title": _title(f"{field}: {unit}")},
                "yaxis": {"title": _title("samples")},
                "margin": _MARGIN,
                "height": 300,
                "bargap": 0.05,
            },
        )
        actions = panel.h_stack("actions", gap=1)
        actions.btn("worst_first", label="Worst first", on_click=self.worst_first)
        actions.btn("best_first", label="Best first", on_click=self.best_first)
        actions.btn("show_worst", label="Show worst %", on_click=self.show_worst_percent)
        actions.btn("tag", label="Tag beyond threshold", on_click=self.tag_beyond)
        actions.btn("clear", label="Clear filter", on_click=self.clear_filter)
        sliders = panel.h_stack("sliders", gap=2)
        sliders.float(
            "percent",
            default=ctx.panel.state.percent or 10.0,
            min=1.0,
            max=100.0,
            label="Worst %",
            view=types.SliderView(),
            on_change=self.on_percent,
        )
        sliders.float(
            "threshold",
            default=ctx.panel.state.threshold or 0.0,
            min=0.0,
            max=ctx.panel.state.severity_max or 1.0,
            label=f"Tag threshold: severity in {unit}",
            view=types.SliderView(),
            on_change=self.on_threshold,
        )
        return types.Property(panel, view=types.GridView(orientation="vertical"))
