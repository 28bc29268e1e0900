"""The study report in the real components: the page checked in headless Chromium (the browser
loads every embedded image and runs the sorting script), the report logged to the study's MLflow
run, and the Prefect artifacts published from inside a flow run."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_report import ACTIVATIONS, write_study_tree
from vaeops.config import load_params

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
)
# Run in the page after it has loaded: what the browser sees, written into the DOM as JSON.
CHECKS_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const firstColumn = () =>
    [...document.querySelectorAll("#leaderboard tbody tr")].map((row) => row.cells[0].textContent);
  const header = [...document.querySelectorAll("#leaderboard th")]
    .find((th) => th.textContent === "val/iwae_nll");
  header.click();
  const ascending = firstColumn();
  header.click();
  const descending = firstColumn();
  const images = [...document.images];
  const checks = {
    rows: document.querySelectorAll("#leaderboard tbody tr").length,
    images: images.length,
    loaded: images.filter((image) => image.complete && image.naturalWidth > 0).length,
    claims: [...document.querySelectorAll("#claims article.claim")].map((claim) => ({
      title: claim.querySelector("h3").textContent,
      verdict: claim.querySelector(".verdict").textContent,
    })),
    ascending,
    descending,
  };
  const out = document.createElement("pre");
  out.id = "checks";
  out.textContent = JSON.stringify(checks);
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory, params_writer):
    """The synthetic study's params, after `write_report` wrote its page."""
    from vaeops.report import write_report

    params = load_params(write_study_tree(tmp_path_factory.mktemp("study"), params_writer))
    write_report(params)
    return params


def browser_checks(page: Path, profile: Path) -> dict:
    """Load a copy of the page with CHECKS_SCRIPT in headless Chromium; the checks it wrote."""
    checked = page.with_name("checked.html")
    checked.write_text(page.read_text().replace("</body>", CHECKS_SCRIPT + "</body>"))
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", checked.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="checks">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"no checks in the DOM; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_in_a_browser(report, tmp_path):
    checks = browser_checks(report.paths.reports / "study.html", tmp_path / "profile")
    assert checks["rows"] == len(ACTIVATIONS) + 1  # one per config, the AE included
    assert checks["images"] == 7 + 3 + 12  # figures, the champion's images, two grids per config
    assert checks["loaded"] == checks["images"]
    claims = json.loads((report.paths.metrics / "claims.json").read_text())
    # claims.json is keyed (sorted) by claim; the page lists them in the study's order.
    listed = sorted((claim["title"], claim["verdict"]) for claim in checks["claims"])
    assert listed == sorted((claim["title"], claim["verdict"]) for claim in claims.values())
    assert {verdict for _, verdict in listed} <= {"supported", "not supported", "inconclusive"}
    # Clicking the header sorts by the column's numbers, and again in reverse; the AE has none.
    vaes = ["vae-prelu", "vae-relu", "vae-silu", "vae-tanh", "vae-sigmoid"]
    assert checks["ascending"] == [*vaes, "ae-relu"]
    assert checks["descending"] == ["ae-relu", *vaes[::-1]]


def test_the_report_is_logged_to_the_study_run(report, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vaeops.steps.report import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # The study run is found by the split file's digest (vaeops.identity.study_key).
    report.paths.splits.write_bytes(b"the synthetic study's splits")
    done = run(report)
    logged = MlflowClient().list_artifacts(done["mlflow_run"], "report")
    assert sorted(Path(item.path).name for item in logged) == [
        "claims.json",
        "study.html",
        "study.md",
    ]
    local = MlflowClient().download_artifacts(done["mlflow_run"], "report/study.html", tmp_path)
    assert Path(local).read_bytes() == (report.paths.reports / "study.html").read_bytes()


def test_prefect_artifacts_from_inside_a_flow_run(report, prefect_api):
    from prefect import flow
    from prefect.artifacts import Artifact

    from vaeops.report import PREFECT_CLAIMS_KEY, PREFECT_LEADERBOARD_KEY, publish_prefect_artifacts

    @flow
    def publish() -> bool:
        return publish_prefect_artifacts(report)

    assert publish() is True
    table = Artifact.get(PREFECT_LEADERBOARD_KEY)
    rows = json.loads(table.data)
    assert rows[0]["config"] == "vae-prelu"
    assert len(rows) == len(ACTIVATIONS) + 1
    claims = Artifact.get(PREFECT_CLAIMS_KEY).data
    for claim in json.loads((report.paths.metrics / "claims.json").read_text()).values():
        assert f"| {claim['title']} | **{claim['verdict']}** |" in claims
