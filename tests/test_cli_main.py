"""The `xai-torch` entry point (xai_torch/cli/main.py): exit codes, progress lines on a pipe, `python -m`."""
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from xai_torch import cli
from xai_torch.cli.explain import explain_images
from xai_torch.models import LoadedModel


def test_demo_rejects_unknown_names(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["demo", "--out", str(out), "--methods", "magic"]) == 2
    assert "unknown method(s) ['magic']; choose from gradient" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(out), "--images", "lena"]) == 2
    assert "unknown image(s) ['lena']" in capsys.readouterr().err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("argv", [["demo", "--fast"], ["demo", "--methods", "gradient", "extra"],
                                  ["explain", "cat.jpg", "--frobnicate", "3"]])
def test_unknown_options_exit_2_naming_the_choices(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown option(s)" in err and "--out" in err and "--methods" in err
    assert not (tmp_path / "out").exists()


def test_progress_lines_reach_a_pipe_while_the_command_runs(tmp_path):
    # stdout and stderr are pipes, not terminals: the estimate and one line per method arrive flushed
    proc = subprocess.Popen([sys.executable, "-m", "xai_torch", "demo", "--out", str(tmp_path / "out"), "--images",
                             "chelsea", "--methods", "gradient", "--no-metrics", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        running = proc.poll() is None  # the explaining, the pictures and the report are still to come
        line = next(line for line in proc.stderr if line.startswith("xai-torch ["))
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert "of model time" in first and running
    assert line.startswith("xai-torch [") and " s] gradient (1/1): " in line


def test_slow_methods_report_each_image(tmp_path, capsys):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    loaded = LoadedModel(net, "tiny", None, ((0.5,) * 3, (0.5,) * 3), None,
                         lambda crops: torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255)
    photos = list(np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    start = time.perf_counter()
    explain_images(loaded, ["a", "b"], photos, ["x", "y"], ["occlusion"], out=tmp_path, progress=True, demo=True)
    err = capsys.readouterr().err.splitlines()
    assert [e.split("] ", 1)[1] for e in err[:2]] == ["occlusion: image 1/2 (a) done", "occlusion: image 2/2 (b) done"]
    assert err[2].split("] ", 1)[1].startswith("occlusion (1/1): ")
    assert float(err[2].split("[", 1)[1].split(" s]")[0]) <= time.perf_counter() - start + 1


def test_python_dash_m_works_like_the_console_script():
    res = subprocess.run([sys.executable, "-m", "xai_torch", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "demo" in res.stdout and "explain" in res.stdout
