"""Stage quality_model's entry (lmbuild/data/quality_model.py): the classifier's F1 floor,
data.quality_model.min_f1."""

from __future__ import annotations

import random
import re

import pytest

from lmbuild.build.config import validate
from lmbuild.data import quality, quality_model
from lmbuild.data.embedded import iter_shakespeare
from lmbuild.errors import UserError

from clean_runs import jsonl_source, passages


def test_the_f1_floor_is_the_always_positive_classifiers_by_default():
    assert quality_model.always_positive_f1(50, 50) == pytest.approx(2 / 3)
    assert quality_model.always_positive_f1(10, 90) == pytest.approx(2 * 0.1 / 1.1)
    figures = lambda f1: {"f1": f1, "precision": 0.5, "recall": 0.9}  # noqa: E731
    balanced = {"hq": 50, "lq": 50}
    quality_model.check_floor(figures(0.6668), balanced, None)
    for f1 in (0.6667, 0.5):  # labelling everything positive (2/3 rounded), or worse
        with pytest.raises(UserError, match=r"^data\.quality_model\.min_f1: the classifier's validation F1 .* no better than labelling every document positive \(F1 0\.6667\)"):
            quality_model.check_floor(figures(f1), balanced, None)
    quality_model.check_floor(figures(0.2), {"hq": 10, "lq": 90}, None)  # rare positives: the baseline is 0.18
    quality_model.check_floor(figures(0.5), balanced, 0.5)  # a number: that floor
    with pytest.raises(UserError, match=r"validation F1 0\.4000 .* under the floor 0\.5$"):
        quality_model.check_floor(figures(0.4), balanced, 0.5)
    quality_model.check_floor(figures(0.0), balanced, 0)  # 0 accepts any classifier


def test_a_classifier_of_identical_positives_and_negatives_fails_unless_the_floor_is_lowered(tmp_path):
    """The same Shakespeare passages as both classes: the classifier separates nothing (here F1
    0.48 against 0.65 for labelling everything positive); the stage fails with its figures and
    writes no artifact. With min_f1 0 the user takes it anyway."""
    from lmbuild.store.runner import run

    acts = [p for _, text, _ in iter_shakespeare() for p in passages(text)]
    random.Random(0).shuffle(acts)
    source = [jsonl_source(tmp_path / "same.jsonl", acts[:300])]
    settings = lambda **extra: {"quality_model": validate({"data": {"quality_model": {  # noqa: E731
        "positives": source, "negatives": source, "dim": 16, "bucket": 20000, **extra}}})["data"]["quality_model"]}
    out = tmp_path / "artifacts" / "quality_model" / "0123456789abcdef"
    with pytest.raises(UserError) as err:
        run(quality_model.build, stage="quality_model", key=out.name, settings=settings(), lineage={}, inputs={}, output=out)
    message = str(err.value)
    assert message.startswith("data.quality_model.min_f1: the classifier's validation F1 ") and "\n" not in message
    f1, baseline = (float(x) for x in re.findall(r"F1 (\d\.\d+)", message))
    assert f1 <= baseline and "precision" in message and "held out" in message
    assert not out.exists() and not list(out.parent.glob(".tmp-*"))  # no classifier written
    run(quality_model.build, stage="quality_model", key=out.name, settings=settings(min_f1=0), lineage={}, inputs={}, output=out)
    assert (out / quality.LEGACY / quality.MODEL).is_file()
