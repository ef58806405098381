"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver) through
Selenium, against the running stack. It logs in with a token, opens the thermometer fit's page, and
checks that both charts rendered from the API's JSON; a 1,000,000-epoch fit's page receives only the
downsampled buckets. Screenshots are kept in $CALIB_TEST_ARTIFACTS (default: test-artifacts/)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import DATA
from tests.stack import Stack

# Its own stack (tests/e2e/conftest.py): its pages list the tenant's fits and instruments.
OWN_STACK = True

REFERENCE = json.loads((DATA / "thermometer.json").read_text())
ARTIFACTS = Path(os.environ.get("CALIB_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    not (CHROMEDRIVER and CHROMIUM), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never tries to download a driver.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(browser: Any, script: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(script)


def log_in(browser: Any, stack: Stack) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.url}/ui/")
    browser.delete_all_cookies()
    browser.get(f"{stack.url}/ui/")
    assert browser.current_url.endswith("/ui/login")  # no cookie yet: sent to the login page
    browser.find_element(By.ID, "token").send_keys(stack.token)
    browser.find_element(By.ID, "login").click()
    wait_for(browser, "return location.pathname === '/ui/'")


def test_the_fit_page_draws_its_loss_curve_and_data(browser: Any, stack: Stack) -> None:
    fit = stack.wait(
        stack.submit(
            {
                "t_u": REFERENCE["t_u"],
                "t_c": REFERENCE["t_c"],
                **REFERENCE["validation_split_run"]["request"],
                "labels": {"sensor": "ui"},
            }
        )["id"]
    )
    log_in(browser, stack)
    assert fit["id"][:8] in browser.page_source and "succeeded" in browser.page_source
    browser.get(f"{stack.url}/ui/?status=diverged")
    assert fit["id"][:8] not in browser.page_source  # the status filter
    browser.get(f"{stack.url}/ui/fits/{fit['id']}")
    wait_for(browser, "return document.getElementById('loss-chart').dataset.rendered")
    wait_for(browser, "return document.getElementById('data-chart').dataset.rendered")
    chart = browser.execute_script("""
        const svg = document.getElementById('loss-chart');
        return {rendered: svg.dataset.rendered, points: Number(svg.dataset.points),
                lines: [...svg.querySelectorAll('polyline')].map(p => p.points.numberOfItems),
                envelopes: svg.querySelectorAll('polygon').length,
                dots: document.querySelectorAll('#data-chart circle').length,
                held: document.querySelectorAll('#data-chart circle.held').length,
                fitted: document.querySelectorAll('#data-chart line.fitted').length};""")
    # 3000 epochs in 600 buckets; a training and a validation curve, each with its envelope.
    assert chart == {
        "rendered": "true",
        "points": 600,
        "lines": [600, 600],
        "envelopes": 2,
        "dots": 11,
        "held": 2,
        "fitted": 1,
    }
    assert browser.find_element("id", "line").text == "t_c = 0.519636 · t_u -16.7512"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-fit.png"))
    assert (ARTIFACTS / "dashboard-fit.png").stat().st_size > 20_000


def test_the_fit_page_says_whether_the_fit_converged(browser: Any, stack: Stack) -> None:
    seed = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], "learning_rate": 1e-2, "input_scale": 0.1}
    short = stack.wait(stack.submit(seed | {"epochs": 100})["id"])
    full = stack.wait(stack.submit(seed | {"epochs": 5000})["id"])
    log_in(browser, stack)
    drawn = """return {verdict: document.getElementById('verdict').textContent,
                       fitted: document.querySelectorAll('#data-chart line.fitted').length,
                       optimum: document.querySelectorAll('#data-chart line.optimum').length};"""
    browser.get(f"{stack.url}/ui/fits/{short['id']}")
    wait_for(browser, "return document.getElementById('data-chart').dataset.rendered")
    # Not converged: the badge, the gap in standard errors, and the least-squares line drawn dashed beside it.
    assert browser.execute_script(drawn) == {"verdict": "not converged", "fitted": 1, "optimum": 1}
    assert "SE in w" in browser.page_source and "epochs" in browser.page_source
    browser.get(f"{stack.url}/ui/fits/{full['id']}")
    wait_for(browser, "return document.getElementById('data-chart').dataset.rendered")
    assert browser.execute_script(drawn) == {"verdict": "converged", "fitted": 1, "optimum": 0}


def test_the_tables_show_converged_and_the_loss_of_each_line(browser: Any, stack: Stack) -> None:
    """A fit that converges in one epoch (standardized, learning rate and epochs "auto") shows the
    least-squares loss, not epoch 1's loss before its update (171 here), in the fit table, on its
    page, and a batch of such fits counts as converged in the batch table."""
    import statsmodels.api as sm

    converging = {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"}
    fit = stack.wait(stack.submit({"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], **converging})["id"])
    ols = sm.OLS(np.asarray(REFERENCE["t_c"]), sm.add_constant(np.asarray(REFERENCE["t_u"]))).fit()
    least_squares = ols.ssr / len(REFERENCE["t_u"])
    assert fit["epochs_done"] == 1 and fit["result"]["converged"] is True
    rows = "\n".join(f"S{i},{u},{c}" for i in range(3) for u, c in zip(REFERENCE["t_u"], REFERENCE["t_c"], strict=True))
    query = "&".join(f"{k}={v}" for k, v in converging.items())
    made = stack.http.post(
        f"/v1/batches?{query}", content="series,t_u,t_c\n" + rows, headers={"Content-Type": "text/csv"}
    )
    batch = stack.wait_batch(made.json()["id"])
    log_in(browser, stack)
    browser.get(f"{stack.url}/ui/")
    cells = """const row = document.querySelector(`a[href='${arguments[0]}']`).closest('tr');
               const cells = [...row.querySelectorAll('td[class]')];
               return Object.fromEntries(cells.map(td => [td.className, td.textContent]));"""
    fit_row = browser.execute_script(cells, f"/ui/fits/{fit['id']}")
    assert fit_row["converged"] == "yes"
    assert float(fit_row["loss"]) == pytest.approx(least_squares, rel=1e-5)  # printed to 6 digits
    assert browser.execute_script(cells, f"/ui/batches/{batch['id']}") == {"converged": "3/3"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "fit-and-batch-tables.png"))
    browser.get(f"{stack.url}/ui/fits/{fit['id']}")
    shown = browser.execute_script("return document.getElementById('loss').textContent")
    assert float(shown.split()[0]) == pytest.approx(least_squares, rel=1e-5) and "171.157" in shown


def test_a_million_epoch_fit_sends_the_browser_only_buckets(browser: Any, stack: Stack) -> None:
    fit = stack.wait(
        stack.submit({"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], "epochs": 1_000_000, "learning_rate": 1e-4})[
            "id"
        ],
        timeout=120,
    )
    assert fit["epochs_done"] == 1_000_000
    log_in(browser, stack)
    browser.get(f"{stack.url}/ui/fits/{fit['id']}")
    wait_for(browser, "return document.getElementById('loss-chart').dataset.rendered")
    received = browser.execute_script("""
        return performance.getEntriesByType('resource').filter(e => e.name.includes('/losses'))
            .map(e => ({url: e.name, bytes: e.encodedBodySize}));""")
    assert len(received) == 1 and "points=600" in received[0]["url"]
    assert received[0]["bytes"] < 200_000  # 600 buckets of five numbers, not a million losses
    assert browser.execute_script("return Number(document.getElementById('loss-chart').dataset.points)") == 600


def test_the_batch_page_shows_progress_and_the_spread_of_the_lines(browser: Any, stack: Stack) -> None:
    fits = [{"t_u": REFERENCE["t_u"], "t_c": [c + 0.3 * i for c in REFERENCE["t_c"]]} for i in range(30)]
    r = stack.http.post("/v1/batches", json={"defaults": {"epochs": 2000, "input_scale": 0.1}, "fits": fits})
    batch = stack.wait_batch(r.json()["id"])
    log_in(browser, stack)
    # The list of recent batches gives its status and progress.
    row = browser.find_element("css selector", f"a[href='/ui/batches/{batch['id']}']").find_element("xpath", "../..")
    assert row.text.split()[1:4] == ["completed", "0/30", "30/30"]  # status, converged, progress
    browser.get(f"{stack.url}/ui/batches/{batch['id']}")
    assert browser.execute_script("return document.getElementById('batch-progress').value") == 30
    bars = browser.execute_script("return document.querySelectorAll('svg.histogram rect').length")
    assert bars == 2 * 24
    browser.find_element("css selector", f"a[href='/ui/?batch={batch['id']}&status=succeeded']").click()
    wait_for(browser, "return location.search.includes('status=succeeded')")
    assert browser.execute_script("return document.querySelectorAll('#fits tbody tr').length") == 30
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-batch.png"))


def _nights(stack: Stack) -> tuple[str, str]:
    """Three thermometers calibrated on two nights; TT-2 reads 0.8 degrees high on the second."""
    rng = np.random.default_rng(5)
    batches = []
    for night in range(2):
        lines = ["series,t_u,t_c"]
        for k in range(3):
            u = np.linspace(0, 100, 15)
            shift = 0.8 if (night == 1 and k == 2) else 0.0
            c = 0.5 * u - 17 + 0.02 * k + shift + rng.normal(0, 0.05, u.size)
            lines += [f"TT-{k},{x!r},{y!r}" for x, y in zip(u.tolist(), c.tolist(), strict=True)]
        r = stack.http.post(
            "/v1/batches?epochs=auto&max_epochs=20000&normalize=standardize&learning_rate=auto",
            content="\n".join(lines) + "\n",
            headers={"Content-Type": "text/csv"},
        )
        assert r.status_code == 202, r.text
        batches.append(stack.wait_batch(r.json()["id"]))
    assert [b["drifted"] for b in batches] == [0, 1]
    stack.http.put("/v1/instruments/TT-2", json={"tolerance": 1.0})
    return batches[0]["id"], batches[1]["id"]


def test_the_instrument_pages_and_the_report_draw_their_charts(browser: Any, stack: Stack) -> None:
    _, second = _nights(stack)
    log_in(browser, stack)
    browser.get(f"{stack.url}/ui/instruments")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#instruments tbody tr td:first-child')].map(td => td.textContent)"
    )
    assert rows[0] == "TT-2" and set(rows) >= {"TT-0", "TT-1", "TT-2"}  # the drifted one first
    browser.get(f"{stack.url}/ui/batches/{second}")
    assert "TT-2" in browser.find_element("id", "drifted").text

    browser.get(f"{stack.url}/ui/instruments/TT-2")
    for chart in ("w-chart", "b-chart", "as-found-chart"):
        wait_for(browser, f"return document.getElementById('{chart}').dataset.rendered")
    drawn = browser.execute_script("""
        const count = (id, what) => document.querySelectorAll(`#${id} ${what}`).length;
        return {verdict: document.getElementById('verdict').textContent,
                w: count('w-chart', 'circle'), wBars: count('w-chart', 'line.errorbar'),
                flagged: count('b-chart', 'circle.flagged'), found: count('as-found-chart', 'circle'),
                tolerance: count('as-found-chart', 'line.limit'),
                rows: count('history', 'tbody tr')};""")
    assert drawn == {"verdict": "drifted", "w": 2, "wBars": 2, "flagged": 1, "found": 1, "tolerance": 1, "rows": 2}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-instrument.png"))

    current = stack.http.get("/v1/instruments/TT-2").json()["current"]
    browser.get(f"{stack.url}/ui/fits/{current['fit_id']}/report")
    wait_for(browser, "return document.getElementById('report-data').dataset.rendered")
    wait_for(browser, "return document.getElementById('report-residuals').dataset.rendered")
    report = browser.execute_script("""
        return {dots: document.querySelectorAll('#report-data circle').length,
                line: document.querySelectorAll('#report-data line.fitted').length,
                residuals: document.querySelectorAll('#report-residuals circle').length,
                readings: document.querySelectorAll('#readings tbody tr').length,
                drift: document.getElementById('report-drift').textContent};""")
    assert report["dots"] == report["residuals"] == report["readings"] == 15 and report["line"] == 1
    assert "DRIFTED" in report["drift"]
    # Printed, the page drops the navigation (its print stylesheet).
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert browser.execute_script("return getComputedStyle(document.querySelector('header')).display") == "none"
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    browser.save_screenshot(str(ARTIFACTS / "dashboard-report.png"))


def test_logging_out_ends_the_session(browser: Any, stack: Stack) -> None:
    """The button logs out: the page goes to the login form, and the old cookie, put back into the
    browser, no longer opens the dashboard (its session was deleted)."""
    from selenium.webdriver.common.by import By

    log_in(browser, stack)
    old = browser.get_cookie("calib_session")
    assert old is not None and old["value"] != stack.token and old["httpOnly"]
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
    wait_for(browser, "return location.pathname === '/ui/login'")
    browser.add_cookie({"name": "calib_session", "value": old["value"], "path": "/"})
    browser.get(f"{stack.url}/ui/")
    assert browser.current_url.endswith("/ui/login")


def test_the_cookie_only_reads(stack: Stack) -> None:
    """The dashboard's cookie works for GET, never for a write (no cross-site request can use it)."""
    import httpx

    fit = stack.submit({"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], "epochs": 10})
    with httpx.Client(base_url=stack.url) as browserlike:
        assert browserlike.post("/ui/login", data={"token": stack.token}).status_code == 302
        assert browserlike.cookies.get("calib_session") not in (None, stack.token)
        assert browserlike.get(f"/v1/fits/{fit['id']}").status_code == 200
        assert browserlike.post(f"/v1/fits/{fit['id']}/cancel").status_code == 401
        assert browserlike.post("/v1/fits", json={"t_u": [1, 2], "t_c": [1, 2]}).status_code == 401
        unknown = browserlike.get("/ui/fits/00000000-0000-0000-0000-000000000000")
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
        assert "no fit with id 00000000-0000-0000-0000-000000000000" in unknown.text, unknown.text
    with httpx.Client(base_url=stack.url, cookies={"calib_session": "not-a-session"}) as stranger:
        assert stranger.get("/ui/").status_code == 302
        assert stranger.get(f"/v1/fits/{fit['id']}").status_code == 401
