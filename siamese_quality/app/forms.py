"""Form pieces every operator of the plugin shares: the model picker, the field picker,
the view target, and how a message goes beside the field at fault."""

from __future__ import annotations

import contextlib

import fiftyone.operators.types as types
from fiftyone.core.fields import FloatField, IntField


def model_keys(ctx) -> list[str]:
    """The models of the App's dataset."""
    from siamese_quality import runs

    return runs.list_model_keys(ctx.dataset) if ctx.dataset is not None else []


def numeric_fields(ctx) -> list[str]:
    schema = ctx.dataset.get_field_schema(ftype=(FloatField, IntField))
    return sorted(schema)


def dropdown(inputs, name: str, values: list[str], label: str, default=None, **kwargs):
    """A dropdown of ``values``; ``default`` if it is one of them, else the first."""
    choices = types.Dropdown()
    for value in values:
        choices.add_choice(value, label=value)
    return inputs.enum(
        name,
        choices.values(),
        default=default if default in values else (values[0] if values else None),
        label=label,
        view=choices,
        **kwargs,
    )


def notice(inputs, name: str, label: str, description: str) -> types.Property:
    inputs.view(name, types.Warning(label=label, description=description))
    return types.Property(inputs)


def no_models_notice(inputs) -> types.Property:
    return notice(
        inputs,
        "no_models",
        "No models yet",
        "Assess with the bundled models (Siamese quality: assess with the default models), "
        "or train one (Siamese quality: train model).",
    )


def param(ctx, name: str, default):
    """``ctx.params[name]``, or ``default`` only when it is missing (0 is a value)."""
    value = ctx.params.get(name)
    return default if value is None else value


def invalid(prop: types.Property, message: str) -> None:
    """Shows ``message`` beside ``prop`` and keeps the form from executing."""
    prop.invalid = True
    prop.error_message = message


def check(prop: types.Property, validator, *args) -> None:
    """Runs the SDK's own ``validator(*args)``; its message goes beside ``prop``."""
    try:
        validator(*args)
    except (ValueError, OSError) as e:
        invalid(prop, str(e))


def images_only(ctx, inputs) -> bool:
    """False, with an error in the form, unless the App's dataset holds images."""
    media_type = ctx.dataset.media_type if ctx.dataset is not None else None
    if media_type != "image":
        inputs.view(
            "not_images",
            types.Error(
                label="Images only",
                description=f"siamese_quality works on image datasets; this one is {media_type!r}.",
            ),
        )
        return False
    return True


def view_target(ctx, inputs, action: str) -> None:
    """The choice of what the operator acts on (dataset, current view, selected samples);
    ``execute`` reads it with :func:`own_target_view`."""
    inputs.view_target(ctx, action_description=action)


@contextlib.contextmanager
def own_dataset(ctx):
    """The App's dataset, as an object only this execution uses; on exit, the App's
    shared object is reloaded, to see what the execution wrote (or wrote before failing).

    The App server keeps one object per dataset and reloads it on every request (the
    panel's poll: every 3 s), from other threads. A reload between a change to the
    dataset's schema or runs and its save dropped that change: an App-side assess
    under load wrote a field without its description (FiftyOne 1.22). An operator that
    changes the dataset works on an object of its own.
    """
    import fiftyone as fo

    # FiftyOne's constructor of an instance outside its per-name cache
    dataset = fo.Dataset._make_instance(ctx.dataset.name, _create=False)
    try:
        yield dataset
    finally:
        ctx.dataset.reload()


@contextlib.contextmanager
def own_target_view(ctx):
    """``ctx.target_view()`` (what the form's view target chose), on :func:`own_dataset`."""
    import fiftyone as fo

    target = ctx.target_view()
    with own_dataset(ctx) as dataset:
        yield (
            dataset
            if isinstance(target, fo.Dataset)
            else fo.DatasetView._build(dataset, target._serialize())
        )


def multi_select(inputs, name: str, values: list[str], label: str, **kwargs) -> types.Property:
    """A multi-select of ``values`` (all chosen by default), as ``params[name]``."""
    choices = types.AutocompleteView(allow_user_input=False, allow_duplicates=False)
    for value in values:
        choices.add_choice(value, label=value)
    return inputs.list(name, types.String(), default=values, label=label, view=choices, **kwargs)


def model_list(inputs, keys: list[str], label: str, **kwargs) -> types.Property:
    """A multi-select of models ``keys`` (all chosen by default), as ``params["keys"]``."""
    return multi_select(inputs, "keys", keys, label, **kwargs)


def model_picker(ctx, inputs, label: str = "Model") -> str | None:
    """A dropdown of the dataset's models; the chosen key, or None (a notice) if none."""
    keys = model_keys(ctx)
    if not keys:
        no_models_notice(inputs)
        return None
    dropdown(inputs, "key", keys, label, default=ctx.params.get("key"), required=True)
    return ctx.params.get("key") or keys[0]


def field_picker(ctx, inputs) -> str | None:
    """A dropdown of numeric fields, this plugin's first; the chosen one, or None."""
    fields = numeric_fields(ctx)
    if not fields:
        notice(
            inputs,
            "no_fields",
            "No quality fields yet",
            "Score the dataset with a quality model first.",
        )
        return None
    from siamese_quality import runs

    ours = [f for f in runs.owned_fields(ctx.dataset) if not f.endswith("_raw") and f in fields]
    ordered = ours + [f for f in fields if f not in ours]
    dropdown(
        inputs, "field", ordered, "Quality field", default=ctx.params.get("field"), required=True
    )
    return ctx.params.get("field") or ordered[0]


def confidence_input(ctx, inputs, field: str) -> None:
    """For a field whose model tells how sure it is (rotation), an optional minimum
    confidence: the action then keeps only the samples read at least that surely."""
    from siamese_quality.actions import check_min_confidence
    from siamese_quality.registry import confidence_field

    if ctx.dataset is None or not ctx.dataset.has_field(confidence_field(field)):
        return
    from siamese_quality.core.tilt import LINES_SURE

    prop = inputs.float(
        "min_confidence",
        default=LINES_SURE,
        min=0.0,
        max=1.0,
        label="Only samples read with confidence at least (0: all, 0-1)",
        description=f"From {confidence_field(field)!r}. Rotation: {LINES_SURE:g} keeps the "
        "photos whose long lines agree on a tilt (right within 3 degrees on 85 % of the "
        "benchmark's photos with an upright); a tilt read off a texture or the sky is arbitrary",
    )
    check(prop, check_min_confidence, ctx.dataset, field, ctx.params.get("min_confidence"))
