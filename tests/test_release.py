"""What a user sees before writing any code: the license, the type marker and the metadata
of the package, the front page, and the command's help and warnings."""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT

import keras_advreg
from keras_advreg.apps import cli

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (CI runs 3.11)
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_license_is_the_apache_2_text_the_metadata_declares():
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "LICENSE" in PYPROJECT["project"]["license-files"]


def test_the_package_ships_its_type_marker():
    from pathlib import Path

    assert (Path(keras_advreg.__file__).parent / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["keras_advreg"]
    assert "Typing :: Typed" in PYPROJECT["project"]["classifiers"]


def test_project_urls_point_at_the_repository():
    urls = PYPROJECT["project"]["urls"]
    for name in ("Homepage", "Repository", "Documentation", "Issues", "Changelog"):
        assert urls[name].startswith("https://github.com/keras-advreg/keras-advreg"), name


def test_the_docs_extra_installs_the_site_tools():
    docs = " ".join(PYPROJECT["project"]["optional-dependencies"]["docs"])
    assert "mkdocs" in docs and "mkdocs-material" in docs and "mkdocstrings[python]" in docs


def test_the_readme_is_a_front_page():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    # How to install today (from source), and the release line marked as such.
    assert "pip install -e" in text and 'pip install "keras-advreg[all]"' in text
    assert "not on PyPI yet" in text
    # Links are absolute (PyPI shows this page too) and point at files that exist.
    base = "https://github.com/keras-advreg/keras-advreg/blob/main/"
    pages = re.findall(re.escape(base) + r"([^)#]+)", text)
    assert any(page.startswith("docs/") for page in pages)
    for page in pages:
        assert (REPO_ROOT / page).exists(), page


def test_user_facing_text_speaks_of_the_product_not_of_work_items():
    pages = [REPO_ROOT / "README.md", REPO_ROOT / "CHANGELOG.md"]
    pages += sorted((REPO_ROOT / "docs").rglob("*.md"))
    words = re.compile(r"\bthe issue\b|\bissue \d+|issue's|\bthe task\b|\btarget [<>]=", re.I)
    for page in pages:
        found = words.findall(page.read_text())
        assert not found, f"{page.name}: {found}"


def test_evaluate_help_names_autoattack_the_default():
    import argparse

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    evaluate = commands.choices["evaluate"].format_help()
    assert "AutoAttack" in evaluate
    assert "white-box FGSM or PGD attacks" not in evaluate


def test_the_command_prints_each_warning_once(capsys, tmp_path):
    # logits [x, -x]: FGSM is an upper bound, which the report says; the same finding must
    # not come out a second time as a Python warning with its source line.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2)])
    model.set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    model.save(tmp_path / "model.keras")
    x = np.linspace(-1, 1, 16, dtype="float32")[:, None]
    np.savez(tmp_path / "data.npz", x=x, y=(x[:, 0] < 0).astype("int64"))
    argv = ["evaluate", tmp_path / "model.keras", "--dataset", tmp_path / "data.npz"]
    argv += ["--attack", "fgsm", "--epsilons", "0.1", "--quiet", "--no-plots"]
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        status = cli.main([str(a) for a in argv + ["--output-dir", tmp_path / "out"]])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert [str(w.message) for w in escaped if issubclass(w.category, UserWarning)] == []
    both = out + err
    assert both.count("is an upper bound on robust accuracy") == 1
    assert "UserWarning" not in both
