"""The catalogue is the one list of names: every entry has its implementation, and the
modules that need a name read it from there (nothing restates it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torchvision.transforms import v2

from hbacli import catalogue
from hbacli.catalogue import BASELINES, DATASETS, FAMILIES, MODELS, STRATEGIES
from hbacli.datasets import SOURCES
from hbacli.errors import HbaError

PACKAGE = Path(catalogue.__file__).parent


def test_catalogue_imports_no_torch():
    """Torch-free, so the CLI's help and the configs can read it without loading torch."""
    tree = ast.parse((PACKAGE / "catalogue.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"torch", "torchvision", "numpy"} & (imported | modules)


def test_every_model_has_a_builder_and_every_builder_an_entry():
    from hbacli.nets import _BUILDERS, build_model

    assert set(_BUILDERS) == set(MODELS)
    assert build_model("wrn16_1", 10) is not None
    with pytest.raises(HbaError, match="wrn16_1"):
        build_model("vgg16", 10)


def test_every_dataset_has_a_family_a_reader_and_its_table_rows():
    for name, entry in DATASETS.items():
        assert entry.family in FAMILIES, name
        assert entry.source in SOURCES or entry.source in ("digits", "imagefolder"), name
        assert entry.search["model"] in MODELS, name
        assert any(row == entry.evaluation_row for row, _ in catalogue.EVALUATION_RECIPES), name
    for (_, model) in catalogue.EVALUATION_RECIPES:
        assert model in MODELS
    for family in FAMILIES.values():
        assert family.eval_model in MODELS


def test_dataset_names_resolve_and_unknown_ones_are_refused_in_one_line():
    assert catalogue.dataset_family("reduced-cifar100") == "cifar"
    assert catalogue.dataset_family("imagefolder:/data/x") == "imagefolder"
    for bad in ("mnist", "imagefolder", "cifar10-foo"):
        with pytest.raises(HbaError, match=r"unknown dataset .*digits.*imagefolder:PATH"):
            catalogue.dataset_entry(bad)


def test_baselines_name_real_torchvision_transforms_and_autoaugment_policies():
    for name, baseline in BASELINES.items():
        if baseline.torchvision is not None:
            assert hasattr(v2, baseline.torchvision), name
    for family in FAMILIES.values():
        assert family.autoaugment_policy in v2.AutoAugmentPolicy.__members__


def test_every_strategy_selects_layers():
    from hbacli.hyper import select_layers
    from hbacli.nets import build_model

    counts = {s: len(select_layers(build_model("wrn16_1", 10), s)) for s in STRATEGIES}
    assert counts["all"] == counts["conv+bn"] + 1    # + the classifier, a Linear
    assert counts["conv+bn"] == counts["conv"] + counts["bn"]
    assert counts["1st-conv"] == counts["1st-bn"] == 1 < counts["bn"]


# The one implementation table a catalogue may have (its keys are the catalogue's names).
IMPLEMENTATIONS = {"MODELS": PACKAGE / "nets" / "__init__.py",
                   "DATASETS": PACKAGE / "datasets.py"}   # SOURCES: readers, named like datasets


@pytest.mark.parametrize("table", ["BASELINES", "STRATEGIES", "MODELS", "FAMILIES", "DATASETS"])
def test_no_module_restates_a_catalogue(table):
    """No other module of the package defines a tuple or dict holding the catalogue's names."""
    names = set(getattr(catalogue, table))
    for path in PACKAGE.rglob("*.py"):
        if path.name == "catalogue.py" or path == IMPLEMENTATIONS.get(table):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                strings = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            elif isinstance(node, ast.Dict):
                strings = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            else:
                continue
            restated = strings & names
            assert len(restated) < 3 or len(names) < 3, (path.name, node.lineno, restated)
