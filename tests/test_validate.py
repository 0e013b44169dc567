"""validate.check_tasks: a study names only known tasks, and trains only on tasks that allow it."""

import pytest
from helpers import make_config

from traitmap.errors import TraitmapError
from traitmap.testing import MICRO_STUDY
from traitmap.validate import check_tasks


def test_unknown_or_untrainable_tasks_are_refused(tmp_path):
    with pytest.raises(TraitmapError, match="nosuchtask"):
        check_tasks(make_config(tmp_path, "smollm2-135m", MICRO_STUDY.replace('"goat"]', '"nosuchtask"]')))
    with pytest.raises(TraitmapError):
        check_tasks(make_config(tmp_path, "smollm2-135m", MICRO_STUDY.replace('["flipkart"', '["metamath_gsm8k_backward"')))
