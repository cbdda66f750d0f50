"""Operators of the siamese_quality plugin."""

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.core.fields import FloatField, IntField


def _numeric_fields(dataset) -> list[str]:
    schema = dataset.get_field_schema(ftype=(FloatField, IntField))
    return sorted(schema)


class SortByQuality(foo.Operator):
    """Sorts the current view by a quality field."""

    @property
    def config(self):
        return foo.OperatorConfig(
            name="sort_by_quality",
            label="Siamese quality: sort by quality",
            description="Sort samples by a quality field, worst (largest) first",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _numeric_fields(ctx.dataset)
        if not fields:
            inputs.view(
                "no_fields",
                types.Warning(
                    label="No quality fields yet",
                    description="Score the dataset with a quality model first.",
                ),
            )
            return types.Property(inputs)
        choices = types.Dropdown()
        for name in fields:
            choices.add_choice(name, label=name)
        inputs.enum(
            "field",
            choices.values(),
            default=fields[0],
            required=True,
            label="Quality field",
            view=choices,
        )
        inputs.bool(
            "largest_first",
            default=True,
            label="Largest first",
            description="Largest magnitude (e.g. most blurred) first",
        )
        return types.Property(inputs)

    def execute(self, ctx):
        field = ctx.params["field"]
        view = ctx.target_view().sort_by(field, reverse=ctx.params.get("largest_first", True))
        ctx.ops.set_view(view)
        return {"field": field}


OPERATORS = [SortByQuality]
