"""The Temporal Web UI as a person sees it, in a real browser (issue 24).

`selfheal dev` runs the whole stack; four demo alerts make a remediated, a waiting, a
refused (people said no: completed) and a failed incident (its target left the selector
before the approved reboot: a failed workflow); headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium) opens each incident's page and the test reads what is on the screen: the status
badge, and on the User Metadata tab the summary, the static details (what fired) and the
current details (the story so far). Every wait is on a condition, never a fixed sleep.
A screenshot of each page is kept in the test's own folder (its path is printed).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal import search
from selfheal.contract.workflows import FAILED_OUTCOMES
from selfheal.dev.aws_sim import DEMO_REGION, session
from tests.conftest import require
from tests.support.waiting import wait_until
from tests.test_dev import free_port, printed_alerts, processes_mentioning, read_until, run_as_printed, selfheal_script, stop_dev

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGE_TIMEOUT = 180  # seconds for any one thing to show: a busy 2-core machine is slow, not broken


def _selenium_problem() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


def _payload(curl: str) -> dict:
    """The JSON body of a printed curl line: the alert as it was sent."""
    args = shlex.split(curl)
    return json.loads(args[args.index("-d") + 1])


class Browser:
    """Headless Chromium over chromedriver; every read waits for its condition."""

    def __init__(self, profile: Path, shots: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,1500", f"--user-data-dir={profile}"):
            options.add_argument(arg)
        self.shots = shots
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(shots.parent / "chromedriver.log")),
                                       options=options)
        self.driver.set_page_load_timeout(PAGE_TIMEOUT)

    def quit(self) -> None:
        self.driver.quit()

    def _wait(self, condition, what: str, name: str):
        from selenium.common.exceptions import (
            NoSuchElementException, NoSuchFrameException, StaleElementReferenceException, TimeoutException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        seen = {"last": "nothing"}

        def probe(driver):
            ok, seen["last"] = condition(driver)
            return seen["last"] if ok else False

        try:
            return WebDriverWait(self.driver, PAGE_TIMEOUT, poll_frequency=0.5, ignored_exceptions=(
                NoSuchElementException, NoSuchFrameException, StaleElementReferenceException)).until(probe)
        except TimeoutException:
            self.driver.switch_to.default_content()
            failed = self.shots / f"{name}-FAILED.png"
            self.driver.save_screenshot(str(failed))
            raise AssertionError(f"{what}: not shown within {PAGE_TIMEOUT}s on {self.driver.current_url} "
                                 f"(screenshot {failed}); it showed: {seen['last']!r}") from None

    def badge(self, expected: str, name: str) -> str:
        from selenium.webdriver.common.by import By

        def shown(driver):
            text = driver.find_element(By.CSS_SELECTOR, '[data-testid="execution-status"]').text.strip()
            return text == expected, text

        return self._wait(shown, f"status badge {expected!r}", name)

    def open_user_metadata(self, name: str) -> None:
        from selenium.webdriver.common.by import By

        def clicked(driver):
            tab = driver.find_element(By.CSS_SELECTOR, '[data-testid="user-metadata-tab"]')
            selected = tab.get_attribute("aria-selected") == "true"
            if not selected:
                tab.click()
            return selected, f"aria-selected={tab.get_attribute('aria-selected')}"

        self._wait(clicked, "the User Metadata tab", name)

    def frame_text(self, frame_id: str, *expected: str, name: str) -> str:
        """The visible text of one of the tab's rendered-Markdown frames, once it shows all of ``expected``."""
        from selenium.webdriver.common.by import By

        def shown(driver):
            driver.switch_to.default_content()
            driver.switch_to.frame(driver.find_element(By.ID, frame_id))
            try:
                text = driver.find_element(By.TAG_NAME, "body").text
            finally:
                driver.switch_to.default_content()
            return all(e in text for e in expected), text

        return self._wait(shown, f"{frame_id} showing {expected!r}", name)


def test_the_web_ui_shows_the_status_summary_and_story_of_remediated_waiting_refused_and_failed_incidents(tmp_path):
    from selfheal.dev.aws_sim import moto_binary

    require("curl", None if shutil.which("curl") else "curl not installed")
    require("moto_server", None if moto_binary() else "not installed (pip install 'moto[server]')")
    require("chromium", None if os.access(CHROMIUM, os.X_OK) else f"{CHROMIUM} missing (apt-get install chromium)")
    require("chromedriver", None if os.access(CHROMEDRIVER, os.X_OK) else
            f"{CHROMEDRIVER} missing (apt-get install chromium-driver)")
    require("selenium", _selenium_problem())

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    temporal, ui, ingress, aws, metrics = free_port(), free_port(), free_port(), free_port(), free_port()
    data, elsewhere, profile = tmp_path / "devdata", tmp_path / "elsewhere", tmp_path / "chromium-profile"
    elsewhere.mkdir()
    address = f"127.0.0.1:{temporal}"

    def show(incident_id: str) -> dict:
        shown = subprocess.run([sys.executable, "-m", "selfheal.cli", "show", incident_id, "--json", "--address", address],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        return json.loads(shown.stdout) if shown.returncode == 0 else {}

    proc = subprocess.Popen(
        [*selfheal_script(), "dev", "--data-dir", str(data), "--aws-port", str(aws), "--metrics-port", str(metrics),
         "--temporal-port", str(temporal), "--ui-port", str(ui), "--ingress-port", str(ingress)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(tmp_path / "dev.err").open("w"),
    )
    browser = None
    try:
        lines = read_until(proc, "Ctrl-C stops everything.", timeout=180)
        curls = {_payload(curl)["alerts"][0]["labels"]["alertname"]: curl for _, curl in printed_alerts(lines)}

        # Fire four of the printed alerts, as printed; each waits for people.
        names = {"remediated": "CheckoutErrorRate", "waiting": "QueueBacklogHigh", "refused": "PaymentsWebhookErrors",
                 "failed": "BatchAgentSilent"}
        incidents, summaries = {}, {}
        for case, alertname in names.items():
            answer = run_as_printed(curls[alertname], elsewhere, timeout=60)
            assert answer.returncode == 0, answer.stderr
            [incidents[case]] = json.loads(answer.stdout)["incidents"]
            alert = _payload(curls[alertname])["alerts"][0]
            summaries[case] = search.summary_of(alert["labels"], alert["annotations"])
        assert summaries["remediated"] == "CheckoutErrorRate on checkout — checkout 5xx rate above 5% since the last deploy"
        for incident in incidents.values():
            assert incident["url"].startswith(f"http://127.0.0.1:{ui}/namespaces/default/workflows/"), incident
            wait_until(lambda i=incident: show(i["id"]).get("status") == "awaiting_approval", timeout=PAGE_TIMEOUT,
                       interval=1)

        # alice approves the checkout rollback (the line dev printed when it asked) and rejects the webhook rollback.
        asked = f" approve {shlex.quote(incidents['remediated']['id'])} --as alice "
        approve = next(line.strip() for line in read_until(proc, asked, timeout=60) if asked in line)
        key = approve.split("--key ")[1].split()[0]
        approved = run_as_printed(approve, elsewhere)
        assert approved.returncode == 0 and "approved by alice" in approved.stdout, approved.stdout + approved.stderr
        rejected = subprocess.run(
            [*selfheal_script(), "reject", incidents["refused"]["id"], "--as", "alice", "--key", key,
             "--reason", "not during the release", "--address", address],
            cwd=elsewhere, capture_output=True, text=True, timeout=60)
        assert rejected.returncode == 0 and "rejected by alice" in rejected.stdout, rejected.stdout + rejected.stderr
        # The batch host loses its Role tag (someone repurposed it) before alice and bob approve
        # its reboot: the executor finds it outside the selector, reboots nothing, and the
        # incident fails.
        [batch_host] = [_payload(curls["BatchAgentSilent"])["alerts"][0]["labels"]["instance_id"]]
        session(f"http://127.0.0.1:{aws}", DEMO_REGION)("ec2").delete_tags(Resources=[batch_host], Tags=[{"Key": "Role"}])
        for person in ("alice", "bob"):
            signed = subprocess.run(
                [*selfheal_script(), "approve", incidents["failed"]["id"], "--as", person,
                 "--key", key.replace("alice_ed25519", f"{person}_ed25519"), "--address", address],
                cwd=elsewhere, capture_output=True, text=True, timeout=60)
            assert signed.returncode == 0 and f"approved by {person}" in signed.stdout, signed.stdout + signed.stderr
        for case, outcomes in (("remediated", {"remediated"}), ("refused", {"rejected"}),
                               ("failed", set(FAILED_OUTCOMES))):
            record = wait_until(lambda c=case: (r := show(incidents[c]["id"])).get("outcome") and r, timeout=240,
                                interval=1)
            assert record["outcome"] in outcomes, (case, record["outcome"], record.get("outcome_detail"))
        assert show(incidents["waiting"]["id"]).get("status") == "awaiting_approval"

        # What a person sees. Markdown renders: "**Outcome: remediated**" reads "Outcome: remediated".
        expected = {
            "remediated": ("COMPLETED", ["done · 1 alert(s)", "Decided", "needs_approval: rollback-checkout on checkout:6",
                                         "approved by alice via ssh", "Done", "Outcome: remediated"]),
            "waiting": ("RUNNING", ["awaiting_approval · 1 alert(s), firing", "needs_approval: scale-queue-workers",
                                    "needs 2 approval(s)",
                                    f"approve: selfheal approve {shlex.quote(incidents['waiting']['id'])} --as alice"]),
            # People said no: nothing failed, the workflow completed; the details say how it ended.
            "refused": ("COMPLETED", ["done · 1 alert(s)", "needs_approval: rollback-payments-webhook",
                                      "rejected by alice via ssh", "Outcome: rejected"]),
            # The remediation failed: a failed workflow, red on the list and under its Failures filter.
            "failed": ("FAILED", ["done · 1 alert(s)", "needs_approval: reboot-batch-hosts",
                                  "approved by alice via ssh", "approved by bob via ssh", "Outcome:"]),
        }
        browser = Browser(profile, shots)
        for case, (badge, story) in expected.items():
            alertname = names[case]
            browser.driver.get(incidents[case]["url"])
            assert browser.badge(badge, case) == badge
            browser.open_user_metadata(case)
            summary = browser.frame_text("user-metadata-summary", summaries[case], name=case)
            assert summary.strip() == summaries[case]
            details = browser.frame_text("user-metadata-details", "What fired", f"alertname={alertname}", name=case)
            assert details.startswith("What fired (as the sender reported it):"), details
            assert "**" not in details  # rendered, not shown as source
            current = browser.frame_text("user-metadata-current-details", *story, name=case)
            assert "**" not in current
            # The page as it stands, with the header's badge still there.
            assert browser.badge(badge, case) == badge
            browser.driver.save_screenshot(str(shots / f"{case}.png"))
        assert sorted(p.name for p in shots.iterdir()) == ["failed.png", "refused.png", "remediated.png", "waiting.png"]
    finally:
        try:
            if browser is not None:
                browser.quit()
        finally:
            code = stop_dev(proc, timeout=90)
    print(f"screenshots: {shots}")
    assert code == 0, (tmp_path / "dev.err").read_text()[-2000:]
    wait_until(lambda: processes_mentioning(str(profile)) == [], timeout=30, interval=0.5)  # Chromium is gone
    assert processes_mentioning(str(data)) == []  # and the dev server
