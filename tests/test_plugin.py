"""The plugin is discoverable, registers exactly what fiftyone.yml names, and loads cleanly."""

import os
import sys

import fiftyone.operators as foo
import fiftyone.plugins as fop
import yaml
from conftest import PLUGINS_DIR, REPO_ROOT, imports_torch_in_a_fresh_process
from fiftyone import ViewField as F

import siamese_quality
from siamese_quality.app import OPERATORS, PANELS


def _manifest() -> dict:
    with open(os.path.join(REPO_ROOT, "fiftyone.yml")) as f:
        return yaml.safe_load(f)


def _our_registered():
    registry = foo.OperatorRegistry()
    ours = [op for op in registry.list_operators() if op.plugin_name == siamese_quality.PLUGIN_NAME]
    return registry, ours


def test_fiftyone_discovers_the_plugin_in_the_project_plugins_dir():
    found = {p.name: p for p in fop.list_plugins()}
    assert siamese_quality.PLUGIN_NAME in found
    plugin = found[siamese_quality.PLUGIN_NAME]
    assert os.path.realpath(plugin.directory) == os.path.realpath(REPO_ROOT)
    assert plugin.directory.startswith(PLUGINS_DIR)


def test_manifest_matches_the_package():
    manifest = _manifest()
    assert manifest["name"] == siamese_quality.PLUGIN_NAME
    assert manifest["version"] == siamese_quality.__version__


def test_registered_operators_and_panels_are_exactly_those_in_the_manifest():
    manifest = _manifest()
    registry, ours = _our_registered()
    assert registry.list_errors() == []

    registered_panels = {op.name for op in ours if isinstance(op, foo.Panel)}
    registered_operators = {op.name for op in ours if not isinstance(op, foo.Panel)}
    assert registered_operators == set(manifest["operators"])
    assert registered_panels == set(manifest.get("panels") or [])
    # FiftyOne silently skips classes missing from the manifest: compare with the code too
    assert {cls().config.name for cls in OPERATORS} == set(manifest["operators"])
    assert {cls().config.name for cls in PANELS} == set(manifest.get("panels") or [])
    assert registered_operators, "the plugin registers no operators"


def test_loading_the_plugin_does_not_import_torch():
    # FiftyOne re-imports the plugin entry for every registry; it must stay light
    code = (
        "import fiftyone.operators as foo\n"
        "registry = foo.OperatorRegistry()\n"
        "assert not registry.list_errors(), registry.list_errors()\n"
        f"assert any(op.plugin_name == {siamese_quality.PLUGIN_NAME!r} "
        "for op in registry.list_operators())\n"
    )
    assert not imports_torch_in_a_fresh_process(code)


def test_sort_by_quality_operator_sets_a_sorted_view(dataset_factory, tmp_path):
    import fiftyone as fo
    from conftest import write_generated_images

    ds = dataset_factory()
    paths = write_generated_images(tmp_path, 4)
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    ids = ds.values("id")
    ds.set_values("quality", dict(zip(ids, [0.3, 2.0, 1.0, 0.1], strict=True)), key_field="id")

    def sorted_by_operator(view, order: str) -> list[float]:
        result = foo.execute_operator(
            f"{siamese_quality.PLUGIN_NAME}/sort_by_quality",
            ctx={"dataset": ds, "view": view},
            params={"field": "quality", "order": order},
        )
        requests = result.executor.to_json()["requests"]
        set_view = [r for r in requests if r["operator_uri"].endswith("set_view")]
        assert len(set_view) == 1
        shown = fo.DatasetView._build(ds, set_view[0]["params"]["view"])
        return shown.values("quality")

    assert sorted_by_operator(ds.view(), "worst first") == [2.0, 1.0, 0.3, 0.1]
    assert sorted_by_operator(ds.view(), "best first") == [0.1, 0.3, 1.0, 2.0]
    # the user's filter stays
    assert sorted_by_operator(ds.match(F("quality") < 1.5), "worst first") == [1.0, 0.3, 0.1]


def _declared_dependencies() -> set[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["project"]["dependencies"])


def test_plugin_requirements_match_the_package_dependencies():
    with open(os.path.join(REPO_ROOT, "requirements.txt")) as f:
        listed = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert listed == _declared_dependencies()


def test_every_third_party_module_the_package_imports_is_a_declared_dependency():
    import ast
    import importlib.metadata
    import re

    declared = {
        re.split(r"[<>=!~; \[]", requirement)[0].lower().replace("_", "-")
        for requirement in _declared_dependencies()
    }
    providers = importlib.metadata.packages_distributions()
    imported = set()
    package = os.path.join(REPO_ROOT, "siamese_quality")
    for folder, _, files in os.walk(package):
        for name in (n for n in files if n.endswith(".py")):
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"siamese_quality", "__future__"}
    undeclared = {
        module: providers.get(module)
        for module in third_party
        if not {d.lower().replace("_", "-") for d in providers.get(module, [])} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
