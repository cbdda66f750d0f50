"""Operators of the siamese_quality plugin: thin forms over the SDK.

Each operator validates its inputs in ``resolve_input`` (the App shows the message
next to the field) and calls one SDK function in ``execute``.
"""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import forms


def _training_summary(info) -> str:
    from siamese_quality.app.panel import MIN_TRUSTED_IMAGES
    from siamese_quality.core.texts import training_summary

    return training_summary(
        info.key, info.unit, info.metrics, info.baseline, info.held_out_images, MIN_TRUSTED_IMAGES
    )


def _training_duration_notice(inputs, budget: float) -> None:
    inputs.view(
        "duration",
        types.Notice(
            label=f"Expected duration: up to {budget:g} s of training, then calibration "
            "and evaluation on held-out images. Execute keeps the App waiting that long; "
            "Schedule hands it to a worker (make worker) and the panel shows its progress."
        ),
    )


# --- training ------------------------------------------------------------------------


def _training_request(ctx, task: str) -> dict:
    """The form's parameters as ``sq.train`` / ``check_training_request`` arguments."""
    backbone = ctx.params.get("backbone")
    options = {
        name: ctx.params[name]
        for name in ("working_resolution", "epochs")
        if ctx.params.get(name) is not None
    }
    return {
        "task": task,
        "key": ctx.params.get("key") or task,
        "overwrite": bool(ctx.params.get("overwrite", False)),
        "max_seconds": forms.param(ctx, "max_seconds", 120.0),
        "backbone": None if backbone in (None, "task default") else backbone,
        **options,
    }


def _check_training_form(ctx, inputs, props: dict, task: str) -> None:
    """The SDK's own check of the request; its message goes beside the field at fault."""
    from siamese_quality.core.errors import InvalidOption
    from siamese_quality.sdk import check_training_request

    try:
        check_training_request(ctx.target_view(), **_training_request(ctx, task))
    except InvalidOption as e:
        if e.option in props:
            forms.invalid(props[e.option], str(e))
        else:
            notice = inputs.view("invalid", types.Error(label="Cannot train", description=str(e)))
            forms.invalid(notice, str(e))


def _resolution_input(inputs, task: str, tasks: list[str], backbone: str | None) -> types.Property:
    from siamese_quality.core.model import BACKBONES
    from siamese_quality.core.training import TrainingConfig

    # params set by hand (SDK, API) may name no known task or backbone: no default then
    chosen = backbone if backbone in BACKBONES else None
    default = (
        f" ({TrainingConfig(task=task, backbone=chosen).resolved().working_resolution} px)"
        if task in tasks
        else ""
    )
    return inputs.int(
        "working_resolution",
        label="Working resolution (px, optional)",
        description="Blur, noise, JPEG, pixelation: the side of the patches read at the "
        "image's own resolution; others: the side the image is resized to. Leave empty "
        f"for the default of this task and backbone{default}",
    )


class TrainModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="train_quality_model",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: train model",
            description="Train a self-supervised quality model on the images (no labels)",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        from siamese_quality.core.distortions import list_distortions
        from siamese_quality.core.model import BACKBONES

        inputs = types.Object()
        if not forms.images_only(ctx, inputs):
            return types.Property(inputs)
        trained = set(forms.model_keys(ctx))
        tasks = list_distortions()
        untrained = [t for t in tasks if t not in trained]
        task = ctx.params.get("task") or (untrained[0] if untrained else tasks[0])
        props = {
            "task": forms.dropdown(
                inputs,
                "task",
                tasks,
                "Distortion",
                default=task,
                required=True,
                description="What the model learns to measure",
            ),
            "key": inputs.str(
                "key",
                label="Model key",
                description=f"Name of the model on this dataset (empty: '{task}', the distortion)",
            ),
            "backbone": forms.dropdown(
                inputs, "backbone", ["task default", *BACKBONES], "Backbone", default="task default"
            ),
            "max_seconds": inputs.float(
                "max_seconds", default=120.0, required=True, min=1.0, label="Time budget (seconds)"
            ),
            "epochs": inputs.int(
                "epochs",
                label="Epochs (optional)",
                description="Stop after this many "
                "passes over the images, if sooner than the time budget",
            ),
            "working_resolution": _resolution_input(
                inputs, task, tasks, ctx.params.get("backbone")
            ),
        }
        inputs.bool("overwrite", default=False, label="Overwrite an existing model")
        forms.view_target(ctx, inputs, "Train on")
        _check_training_form(ctx, inputs, props, task)
        _training_duration_notice(inputs, forms.param(ctx, "max_seconds", 120.0))
        return types.Property(inputs)

    def execute(self, ctx):
        import siamese_quality as sq

        with forms.own_target_view(ctx) as view:
            info = sq.train(
                view,
                **_training_request(ctx, ctx.params["task"]),
                progress=lambda record: ctx.set_progress(
                    progress=record["fraction"], label=f"step {record['step']}"
                ),
            )
        if not ctx.delegated:
            # a toast, not a result dialog to close by hand; the panel redraws by itself
            ctx.ops.notify(_training_summary(info), variant="success")
            ctx.ops.reload_dataset()
        return {"key": info.key, "metrics": info.metrics, "baseline": info.baseline}


# --- scoring -------------------------------------------------------------------------


class ScoreSamples(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="score_quality",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: score samples",
            description="Write calibrated quality fields with one or several models",
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not forms.images_only(ctx, inputs):
            return types.Property(inputs)
        keys = forms.model_keys(ctx)
        if not keys:
            return forms.no_models_notice(inputs)
        keys_prop = forms.model_list(
            inputs,
            keys,
            "Models",
            required=True,
            description="Each writes a field named after its key (and <key>_raw)",
        )
        if ctx.params.get("keys") == []:
            forms.invalid(keys_prop, "Choose at least one model")
        else:
            from siamese_quality.sdk import check_scoring_request

            try:
                check_scoring_request(
                    ctx.dataset,
                    ctx.params.get("keys") or keys,
                    ctx.params.get("fields"),
                    bool(ctx.params.get("overwrite", False)),
                    bool(ctx.params.get("heatmaps", False)),
                )
            except ValueError as e:
                forms.invalid(keys_prop, str(e))
        inputs.bool("overwrite", default=False, label="Overwrite fields I created myself")
        inputs.bool(
            "heatmaps",
            default=False,
            label="Heat maps of where",
            description="Models that read patches (blur, noise, JPEG, pixelation) also "
            "write <key>_heatmap, drawn over each image in the sample view",
        )
        inputs.bool(
            "skip_unchanged",
            default=False,
            label="Only new and changed images",
            description="Keep the values of images scored before whose files did "
            "not change (also resumes an interrupted job)",
        )
        inputs.int(
            "num_shards",
            default=1,
            min=1,
            label="Shards",
            description="Split into this many delegated operations (for several "
            "workers); 1 scores in this operation",
        )
        forms.view_target(ctx, inputs, "Score")
        chosen = ctx.params.get("keys") or keys
        inputs.view(
            "duration",
            types.Notice(label=_expected_scoring(ctx.dataset, chosen, ctx.target_view().count())),
        )
        return types.Property(inputs)

    def resolve_delegation(self, ctx):
        if (ctx.params.get("num_shards") or 1) > 1:
            return False  # the parent only queues its shards, which are delegated
        return None

    def execute(self, ctx):
        with forms.own_target_view(ctx) as view:
            yield from self._score(ctx, view)

    def _score(self, ctx, view):
        import siamese_quality.sdk as sdk

        keys = ctx.params.get("keys") or forms.model_keys(ctx)
        fields = ctx.params.get("fields")  # set by a sharded parent
        overwrite = bool(ctx.params.get("overwrite", False))
        skip_unchanged = bool(ctx.params.get("skip_unchanged", False))
        heatmaps = bool(ctx.params.get("heatmaps", False))
        num_shards = int(ctx.params.get("num_shards") or 1)
        if num_shards > 1:
            queued = sdk.queue_scoring_shards(
                view, keys, num_shards, fields, overwrite, skip_unchanged, heatmaps
            )
            yield ctx.ops.notify(f"Queued {len(queued)} scoring operations")
            return
        plan = sdk.plan_scoring(
            view,
            keys,
            fields,
            overwrite,
            num_workers=None if ctx.delegated else 0,
            skip_unchanged=skip_unchanged,
            job=ctx.params.get("job"),
            heatmaps=heatmaps,
        )
        steps = sdk.run_scoring(plan)
        while True:
            try:
                fraction = next(steps)
            except StopIteration as done:
                summary = done.value
                break
            # immediate runs show no progress: the App's progress dialog stays open at
            # "100 %" until closed by hand; the form states the expected duration instead
            if ctx.delegated:
                ctx.set_progress(progress=fraction, label=f"{', '.join(keys)}: scoring")
        if not ctx.delegated:
            yield ctx.ops.reload_dataset()
            yield ctx.ops.notify(f"{', '.join(keys)}: {summary['message']}", variant="success")


# measured by benchmarks/throughput.py: three local models on 3-MP JPEGs, 2 CPU cores
_TYPICAL_IMAGES_PER_SECOND = 50


def _expected_scoring(dataset, keys: list[str], count: int) -> str:
    """The expected duration of scoring ``count`` samples, from the slowest of these
    models' last scoring on this machine, else the benchmark's rate."""
    from siamese_quality import runs
    from siamese_quality.registry import model_info

    per_sample = []
    for key in keys:
        if key not in runs.list_model_keys(dataset):
            continue
        record = model_info(dataset, key).scoring or {}
        if record.get("seconds") and record.get("samples"):
            per_sample.append(record["seconds"] / record["samples"])
    if per_sample:
        seconds, basis = count * max(per_sample), "the last scoring of these models"
    else:
        seconds, basis = count / _TYPICAL_IMAGES_PER_SECOND, "a typical 2-core CPU"
    return (
        f"Expected duration: about {max(seconds, 1):.0f} s for {count} samples (from {basis}). "
        "Execute keeps the App waiting that long; Schedule hands it to a worker."
    )


# --- evaluation and model management ------------------------------------------------


class EvaluateModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_quality_model",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: evaluate model",
            description="Re-measure a model's calibration and correlation on these images",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not forms.images_only(ctx, inputs) or forms.model_picker(ctx, inputs) is None:
            return types.Property(inputs)
        forms.dropdown(
            inputs,
            "implementation",
            ["reference", "alternative"],
            "Distortion implementation",
            default="reference",
            description="'alternative' distorts with an independent library",
        )
        forms.view_target(ctx, inputs, "Evaluate on")
        return types.Property(inputs)

    def execute(self, ctx):
        import siamese_quality as sq

        with forms.own_target_view(ctx) as view:
            report = sq.evaluate(
                view,
                key=ctx.params["key"],
                implementation=ctx.params.get("implementation") or "reference",
            )
        results = {
            "metrics": report["metrics"],
            "baseline": report["baseline"],
            "images": report["images"],
        }
        reader = report.get("jpeg_file_reader")
        if reader is not None:  # noise: what writes the fields of JPEG files
            results["jpeg_file_reader"] = {k: reader[k] for k in ("metrics", "baseline")}
        return results

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.obj("metrics", label="Metrics", view=types.JSONView())
        outputs.obj("baseline", label="Classical baseline", view=types.JSONView())
        if "jpeg_file_reader" in (ctx.results or {}):
            outputs.obj(
                "jpeg_file_reader",
                label="Its reader of JPEG files, on the copies saved as JPEG 95",
                view=types.JSONView(),
            )
        return types.Property(outputs)


class DeleteModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="delete_quality_model",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: delete model",
            description="Delete a model, its weights and the fields it wrote",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = forms.model_picker(ctx, inputs)
        if key is not None:
            from siamese_quality.registry import model_fields

            fields = model_fields(ctx.dataset, key)
            inputs.view(
                "what",
                types.Notice(
                    label=f"Deletes model '{key}' and its fields: {', '.join(fields) or 'none'}"
                ),
            )
        return types.Property(inputs)

    def execute(self, ctx):
        import siamese_quality as sq

        with forms.own_dataset(ctx) as dataset:
            deleted = sq.delete_model(dataset, ctx.params["key"])
        ctx.ops.reload_dataset()
        return {"deleted_fields": deleted}


class ExportModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="export_quality_model",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: export model",
            description="Write a model to a file that can be imported into another dataset",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if forms.model_picker(ctx, inputs) is not None:
            path = inputs.str(
                "path",
                required=True,
                label="File path",
                description="Where to write the model file (e.g. /tmp/blur.pt)",
            )
            inputs.bool("overwrite", default=False, label="Replace an existing file")
            if ctx.params.get("path"):
                from siamese_quality.registry import check_export_path

                overwrite = bool(ctx.params.get("overwrite"))
                forms.check(path, check_export_path, ctx.params["path"], overwrite)
        return types.Property(inputs)

    def execute(self, ctx):
        import siamese_quality as sq

        path = sq.export_model(
            ctx.dataset,
            ctx.params["key"],
            ctx.params["path"],
            overwrite=bool(ctx.params.get("overwrite", False)),
        )
        return {"path": path}


class ImportModel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="import_quality_model",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: import model",
            description="Add an exported model file to this dataset",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not forms.images_only(ctx, inputs):
            return types.Property(inputs)
        inputs.str("path", required=True, label="Model file")
        inputs.str("key", label="Model key", description="Default: the model's task")
        inputs.bool("overwrite", default=False, label="Overwrite an existing model")
        return types.Property(inputs)

    def execute(self, ctx):
        import siamese_quality as sq

        with forms.own_dataset(ctx) as dataset:
            info = sq.import_model(
                dataset,
                ctx.params["path"],
                key=ctx.params.get("key"),
                overwrite=bool(ctx.params.get("overwrite", False)),
            )
        ctx.ops.reload_dataset()
        return {"key": info.key}


# --- quality actions -----------------------------------------------------------------


class SortByQuality(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="sort_by_quality",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: sort by quality",
            description="Show the worst (or best) samples first",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        field = forms.field_picker(ctx, inputs)
        if field is not None:
            forms.dropdown(
                inputs, "order", ["worst first", "best first"], "Order", default="worst first"
            )
            forms.confidence_input(ctx, inputs, field)
            forms.view_target(ctx, inputs, "Sort")
        return types.Property(inputs)

    def execute(self, ctx):
        from siamese_quality import actions

        view = actions.worst_first(
            ctx.target_view(),
            ctx.params["field"],
            best_first=ctx.params.get("order") == "best first",
            min_confidence=ctx.params.get("min_confidence"),
        )
        ctx.ops.set_view(view)
        return {"count": view.count()}


class FilterByQuality(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="filter_by_quality",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: filter by quality",
            description="Keep a range of values, or the worst N %",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        field = forms.field_picker(ctx, inputs)
        if field is None:
            return types.Property(inputs)
        mode = ctx.params.get("mode") or "worst percent"
        forms.dropdown(inputs, "mode", ["worst percent", "range"], "Keep", default=mode)
        if mode == "range":
            inputs.float("low", label="Minimum (optional)")
            inputs.float("high", label="Maximum (optional)")
        else:
            percent = inputs.float(
                "percent", default=10.0, min=0.0, max=100.0, label="Worst percent"
            )
            from siamese_quality.actions import check_percent

            forms.check(percent, check_percent, forms.param(ctx, "percent", 10.0))
        forms.confidence_input(ctx, inputs, field)
        forms.view_target(ctx, inputs, "Filter")
        return types.Property(inputs)

    def execute(self, ctx):
        from siamese_quality import actions

        field, view = ctx.params["field"], ctx.target_view()
        sure = ctx.params.get("min_confidence")
        if ctx.params.get("mode") == "range":
            low, high = ctx.params.get("low"), ctx.params.get("high")
            view = actions.in_range(view, field, low, high, min_confidence=sure)
        else:
            percent = forms.param(ctx, "percent", 10.0)
            view = actions.worst_percent(view, field, percent, min_confidence=sure)
        ctx.ops.set_view(view)
        return {"count": view.count()}


class TagByQuality(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="tag_by_quality",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: tag by quality",
            description="Tag samples worse than a threshold",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        field = forms.field_picker(ctx, inputs)
        if field is None:
            return types.Property(inputs)
        inputs.float(
            "threshold",
            required=True,
            label="Threshold",
            description="Severity in the field's unit: distance from undistorted "
            "(e.g. blur sigma in px, |tilt| in degrees)",
        )
        tag = inputs.str("tag", default=f"worst_{field}", required=True, label="Tag")
        from siamese_quality.actions import check_tag

        forms.check(tag, check_tag, forms.param(ctx, "tag", f"worst_{field}"))
        forms.confidence_input(ctx, inputs, field)
        forms.view_target(ctx, inputs, "Tag")
        return types.Property(inputs)

    def execute(self, ctx):
        from siamese_quality import actions

        count = actions.tag_beyond(
            ctx.target_view(),
            ctx.params["field"],
            float(ctx.params["threshold"]),
            ctx.params["tag"],
            min_confidence=ctx.params.get("min_confidence"),
        )
        ctx.ops.reload_dataset()
        return {"tagged": count}


class AssessQuality(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="assess_quality",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: assess with the default models",
            description="Score every task with the bundled models, no training needed",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not forms.images_only(ctx, inputs):
            return types.Property(inputs)
        from siamese_quality.core.defaults import default_tasks

        tasks_prop = forms.multi_select(
            inputs,
            "tasks",
            default_tasks(),
            "Tasks",
            description="Each writes a field named after it (blur, noise, ...)",
        )
        inputs.bool(
            "upgrade",
            default=False,
            label="Upgrade to this version's models",
            description="Replace models of an older bundled version and rescore their fields",
        )
        inputs.bool("heatmaps", default=False, label="Heat maps of where")
        if ctx.params.get("tasks") == []:
            forms.invalid(tasks_prop, "Choose at least one task")
        else:
            forms.check(tasks_prop, self._check, ctx)
        forms.view_target(ctx, inputs, "Assess")
        return types.Property(inputs)

    @staticmethod
    def _check(ctx) -> None:
        from siamese_quality.assessment import plan_assessment

        plan_assessment(
            ctx.dataset,
            ctx.params.get("tasks") or None,
            bool(ctx.params.get("upgrade", False)),
            heatmaps=bool(ctx.params.get("heatmaps", False)),
        )

    def execute(self, ctx):
        import siamese_quality as sq

        def progress(fraction: float) -> None:
            if ctx.delegated:
                ctx.set_progress(progress=fraction, label="assessing")

        with forms.own_target_view(ctx) as view:
            result = sq.assess(
                view,
                tasks=ctx.params.get("tasks") or None,
                upgrade=bool(ctx.params.get("upgrade", False)),
                heatmaps=bool(ctx.params.get("heatmaps", False)),
                progress=progress,
                num_workers=None if ctx.delegated else 0,  # no loader processes in the App
            )
        if not ctx.delegated:
            ctx.ops.reload_dataset()
            ctx.ops.notify(result["message"], variant="success")
        return {"tasks": result["tasks"], "scored": result["scoring"].get("scored")}


class SummarizeQuality(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="summarize_quality",
            dynamic=True,  # the form follows its own fields
            label="Siamese quality: summarize issues",
            description="Each sample's worst issue across the scored models, and how bad",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not forms.images_only(ctx, inputs):
            return types.Property(inputs)
        from siamese_quality.overview import DEFAULT_FIELD, scored_models, summary_fields

        scored = [m.key for m in scored_models(ctx.dataset)]
        if not scored:
            return forms.notice(
                inputs, "no_scores", "Nothing scored yet", "Score the dataset with a model first."
            )
        keys = forms.model_list(inputs, scored, "Models to compare")
        field = inputs.str("field", default=DEFAULT_FIELD, label="Field prefix")
        names = summary_fields(forms.param(ctx, "field", DEFAULT_FIELD))
        field.description = f"Writes {', '.join(names.values())}"
        inputs.bool("overwrite", default=False, label="Overwrite fields I created myself")
        if ctx.params.get("keys") == []:
            forms.invalid(keys, "Choose at least one model")
        forms.check(field, self._check, ctx)
        forms.view_target(ctx, inputs, "Summarize")
        return types.Property(inputs)

    @staticmethod
    def _check(ctx) -> None:
        """The SDK's own checks of the target fields, before any work."""
        from siamese_quality.overview import DEFAULT_FIELD, check_summary_fields

        check_summary_fields(
            ctx.dataset,
            forms.param(ctx, "field", DEFAULT_FIELD),
            bool(ctx.params.get("overwrite", False)),
        )

    def execute(self, ctx):
        import siamese_quality as sq

        with forms.own_target_view(ctx) as view:
            summary = sq.summarize(
                view,
                keys=ctx.params.get("keys") or None,
                field=ctx.params.get("field") or "quality",
                overwrite=bool(ctx.params.get("overwrite", False)),
            )
        ctx.ops.reload_dataset()
        ctx.ops.notify(summary["message"], variant="success")
        return {"issues": summary["issues"], "summarized": summary["summarized"]}


class ClearQualityView(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="clear_quality_view",
            label="Siamese quality: clear",
            description="Clear the quality sort/filter, optionally removing a quality tag",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("tag", label="Also remove this tag (optional)")
        return types.Property(inputs)

    def execute(self, ctx):
        from siamese_quality import actions

        removed = 0
        if ctx.params.get("tag"):
            removed = actions.untag(ctx.dataset, ctx.params["tag"])
            ctx.ops.reload_dataset()
        ctx.ops.clear_view()
        return {"untagged": removed}


OPERATORS = [
    TrainModel,
    ScoreSamples,
    AssessQuality,
    SummarizeQuality,
    EvaluateModel,
    DeleteModel,
    ExportModel,
    ImportModel,
    SortByQuality,
    FilterByQuality,
    TagByQuality,
    ClearQualityView,
]
