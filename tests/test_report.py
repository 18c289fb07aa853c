"""The demo report: a self-contained folder that renders in a real browser (headless Chromium)."""
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xai_torch import cli
from xai_torch.errors import XaiError
from xai_torch.report import write_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]

# marks, once the page has loaded, which <img> elements decoded to a real picture
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('img'));
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0 && im.naturalHeight > 0); })
                .map(function (im) { return im.getAttribute('src'); });
  var pre = document.createElement('pre');
  pre.id = 'xai-check';
  pre.textContent = JSON.stringify({images: imgs.length, broken: bad});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed, and the report test needs it to open report.html in a real browser. "
                "`make test` installs it first (`make browser`: `apt-get install -y chromium` on Debian).")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--out", str(out), "--images", "chelsea,coffee", "--methods", "gradient,gradcam",
                     "--metric-step", str(224 * 56), "--device", "cpu"]) == 0  # 5-point curves: fast
    return out, json.loads((out / "summary.json").read_text())


def browser_check(page: Path, tmp_path: Path) -> dict:
    """Open ``page`` in headless Chromium; the result of CHECK_SCRIPT."""
    res = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="xai-check">(.*?)</pre>', res.stdout, re.S)
    assert found, f"Chromium did not render the page (rc {res.returncode}): {res.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_every_image_of_the_report_loads_in_chromium(report, tmp_path):
    out, summary = report
    page = (out / "report.html").read_text()
    # a test-only copy of the page, next to it (same relative paths), with the check script and one image
    # that cannot load, to prove the check sees a broken image
    check = out / "check_report.html"
    check.write_text(page.replace("</body>", '<img src="no-such-file.png" alt="control">' + CHECK_SCRIPT
                                  + "</body>"))
    result = browser_check(check, tmp_path)
    n_img = len(re.findall(r"<img ", page))
    # 2 inputs in the grid + 2 in the prediction cards + 2 x 2 overlays (+ the plots when matplotlib is there)
    assert n_img >= 8
    assert result == {"images": n_img + 1, "broken": ["no-such-file.png"]}


def test_report_is_self_contained_and_shows_the_numbers(report):
    out, summary = report
    page = (out / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert {"chelsea_gradient.png", "coffee_gradcam.png", "chelsea.png"} <= set(srcs)
    for src in srcs:  # relative paths to files inside the folder
        assert "/" not in src and (out / src).is_file(), src
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//|url\(|@import|<link|<script", page, re.I)
    assert "tiger cat" in page and "espresso" in page
    for method, info in summary["methods"].items():
        row = re.search(rf"<tr><td>{method}</td>.*?</tr>", page).group(0)
        assert f"{info['deletion_auc_mean']:.3f}" in row and f"{info['insertion_auc_mean']:.3f}" in row
        assert f"{info['seconds']:.2f}" in row
        assert info["budget"] in row  # the demo's CPU budget, named next to the method
        assert 0 <= info["deletion_auc_mean"] < info["insertion_auc_mean"] <= 1


def test_write_report_rejects_missing_pictures_and_bad_summaries(report, tmp_path):
    out, summary = report
    with pytest.raises(XaiError, match="not in"):
        write_report(tmp_path, summary)  # the PNGs are in `out`, not in tmp_path
    with pytest.raises(XaiError, match="summary dict"):
        write_report(out, {"images": []})
    # no metrics: the table says how to get them, and no AUC column is shown
    bare = {**summary, "metrics": None,
            "methods": {m: {k: v for k, v in info.items() if "auc" not in k and "curve" not in k and k != "fractions"}
                        for m, info in summary["methods"].items()}}
    copy = shutil.copytree(out, tmp_path / "copy")
    page = write_report(copy, bare, plots=False).read_text()
    assert "--metrics" in page and "deletion AUC" not in page and "plot_" not in page


def test_a_missing_chromium_fails_with_the_install_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        chromium()
