"""The GPU benchmark script runs end to end on the CPU in its smoke mode (tiny CNN, 16 px)."""
import re

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gpu_script_smoke_prints_a_row_per_family_with_the_bf16_error():
    from benchmarks import gpu

    text = gpu.run(smoke=True, families=["Gradient", "IG 4"], tests=False)
    rows = {line.split("  ")[0].strip(): line for line in text.splitlines()[3:]}
    assert set(rows) == {"Gradient", "IG 4"}, text
    for line in rows.values():
        assert "failed" not in line, text
        # ms/img, x floor, x ref (captum is installed), peak, bf16 ms, x f32, corr
        numbers = [float(v) for v in line.split("IG rel.")[0][32:].split()]
        assert len(numbers) == 7 and all(v == v for v in numbers), line  # no NaN
        assert numbers[6] > 0.95, line  # bf16 map correlation with float32
    errors = re.findall(r"f32 (\S+), bf16 (\S+)", rows["IG 4"])
    assert errors and float(errors[0][0]) < 0.05 and float(errors[0][1]) < 0.2, rows["IG 4"]
