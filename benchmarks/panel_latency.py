"""How fast the Quality panel follows a view change, on a dataset of N samples.

    python benchmarks/panel_latency.py --n 10000

Builds a dataset of N samples with a scored blur field (values only: the panel
reads fields and run results, never image files), then times the panel's
``on_load`` and ``on_change_view`` through FiftyOne's panel execution path, next
to the bare ``histogram_values`` aggregation they rely on (the baseline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
# the panel runs through FiftyOne's operator registry: find the plugin as `make` does
os.environ.setdefault(
    "FIFTYONE_PLUGINS_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".plugins"),
)


def panel_call(dataset, method: str, state: dict, on_view) -> tuple[float, dict]:
    """One panel event through FiftyOne's operator executor: (seconds, the new state)."""
    import fiftyone.operators as foo

    import siamese_quality as sq

    started = time.perf_counter()
    result = foo.execute_operator(
        f"{sq.PLUGIN_NAME}/quality_panel",
        ctx={
            "dataset": dataset,
            "view": on_view,
            "params": {"__method__": method, "panel_id": "p", "panel_state": state},
        },
    )
    seconds = time.perf_counter() - started
    assert result.error is None, result.error
    new_state = dict(state)
    for request in result.executor.to_json()["requests"]:
        if request["operator_uri"].endswith("panel_state"):
            new_state.update(request["params"]["state"])
    return seconds, new_state


def fill_dataset(dataset, folder: str, n: int) -> None:
    """``n`` samples (scikit-image's photos, repeated) with a blur model and a blur value
    each (random: the panel's cost depends on the count, not on the values)."""
    import fiftyone as fo
    import numpy as np

    import siamese_quality as sq
    from siamese_quality.core.training import TrainingConfig, train_pretext_model
    from siamese_quality.demo import write_skimage_photos

    photos = write_skimage_photos(os.path.join(folder, "photos"))
    model_file = os.path.join(folder, "blur.pt")
    config = TrainingConfig(task="blur", max_seconds=None, max_steps=4, validation_every=2)
    train_pretext_model(photos, config).save(model_file)
    dataset.add_samples(
        [fo.Sample(filepath=photos[i % len(photos)]) for i in range(n)], progress=False
    )
    sq.import_model(dataset, model_file, key="blur")
    sq.score(dataset.limit(len(photos)), key="blur", progress=False)  # creates fields
    dataset.set_values("blur", np.random.default_rng(0).uniform(0, 3, n).tolist())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import fiftyone as fo

    with tempfile.TemporaryDirectory() as folder:
        dataset = fo.Dataset()
        try:
            fill_dataset(dataset, folder, args.n)
            view = dataset.match(fo.ViewField("blur") > 1.0)
            _, state = panel_call(dataset, "on_load", {}, dataset.view())  # warm, get state
            timings = {"histogram_values (baseline)": [], "on_load": [], "on_change_view": []}
            for _ in range(args.repeats):
                started = time.perf_counter()
                view.histogram_values("blur", bins=30)
                timings["histogram_values (baseline)"].append(time.perf_counter() - started)
                timings["on_load"].append(panel_call(dataset, "on_load", {}, dataset.view())[0])
                timings["on_change_view"].append(
                    panel_call(dataset, "on_change_view", state, view)[0]
                )
        finally:
            dataset.delete()

    print(f"\n{args.n} samples, median of {args.repeats}")
    print("step                         | seconds")
    for name, values in timings.items():
        print(f"{name:28s} | {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()
