import math
import re

import pytest

from vision.commands import demo


@pytest.mark.slow
def test_demo_placeholder_trains_and_prints_finite_miou(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "PLACEHOLDER" in printed
    value = float(re.search(r"test/miou = ([0-9.]+)", printed).group(1))
    assert math.isfinite(value) and 0.0 <= value <= 1.0
