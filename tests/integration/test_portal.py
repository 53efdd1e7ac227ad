"""The portal in a real browser: Debian's Chromium, headless, driven by Playwright (never a downloaded
browser). Logs in (a wrong token is refused), creates a group from the form and one from an ACI YAML
file, watches it go Running, reads its logs live, runs a command in the exec terminal, reads the charts,
the nodes and the usage pages, scales an NGroup from its page, deletes the group and logs out. Every
page's screenshot is written under the test run's output directory (``$CORRAL_TEST_OUTPUT``, default
``test-output/``) in ``portal/``."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from corral_server import CorralServer, running_corral
from groups import delete
from orchestration import clean_resource_group, get_ngroup, ngroup_body, profile_body, put_ngroup, put_profile

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
RG = "portal"
NG_RG = "portalng"
TICKER = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done"

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed "
                                "(`make system-packages` installs it)")


def output_dir() -> Path:
    root = Path(os.environ.get("CORRAL_TEST_OUTPUT") or Path(__file__).parents[2] / "test-output")
    out = root / "portal"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    with running_corral(tmp_path_factory.mktemp("cme-portal"), bridge="cme1", subnet="10.84.0.0/16",
                        cgroup_parent="/cme-portal", extra=["--metrics-interval", "1"]) as srv:
        try:
            yield srv
        finally:
            clean_resource_group(srv.client(), NG_RG)  # before the server goes: members would come back


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Chromium for the module, with a fresh user-data dir; HTTPS to Corral's own CA is accepted."""
    with playwright.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("cme-chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=FLAGS, ignore_https_errors=True, viewport={"width": 1280, "height": 1000})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_portal_flow(server: CorralServer, page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expect = playwright.expect
    shots = output_dir()
    n = [0]

    def shot(name: str) -> None:
        n[0] += 1
        page.screenshot(path=str(shots / f"{n[0]:02d}-{name}.png"), full_page=True)

    cfg = server.config
    base = f"{cfg.endpoint}/portal/"
    page.goto(base)
    expect(page.locator("#login-form")).to_be_visible()
    shot("login")

    page.fill("#token", "not-the-token")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("not valid for this Corral installation")
    expect(page.locator("#nav")).to_be_hidden()
    shot("login-refused")

    page.fill("#token", cfg.token)
    page.click("#login-submit")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.get_by_role("heading", name="Resource groups")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "corral_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cfg.token not in cookie["value"]  # a session JWT, never the installation token
    shot("overview-empty")

    # A change without the CSRF token is refused, even with the session cookie.
    status = page.evaluate("""async (path) => (await fetch(path + '?api-version=2023-05-01',
        {method: 'PUT', headers: {'Content-Type': 'application/json'}, body: '{}'})).status""",
                           f"/subscriptions/{cfg.subscription}/resourceGroups/{RG}/providers/"
                           "Microsoft.ContainerInstance/containerGroups/forged")
    assert status == 403

    page.click("#nav-create")
    page.fill("#f-rg", RG)
    page.fill("#f-name", "web")
    page.fill("#f-command", f"sh\n-c\n{TICKER}")
    page.fill("#f-cpu", "0.25")
    page.fill("#f-memory", "0.25")
    page.fill("#f-env", "MODE=portal")
    shot("create-form")
    page.click("#create-submit")

    expect(page.locator("#group-state")).to_have_text("Running", timeout=60_000)
    logs = page.locator("#logs")
    expect(logs).to_contain_text("tick-2", timeout=30_000)
    seen = logs.inner_text()
    last = max(int(x.split("-")[1]) for x in seen.split() if x.startswith("tick-"))
    expect(logs).to_contain_text(f"tick-{last + 2}", timeout=30_000)  # new lines arrive while we look
    expect(page.locator("#events")).to_contain_text("Started")  # what happened before the page opened
    shot("group-running")

    page.click("#term-connect")
    expect(page.locator("#term-status")).to_contain_text("Connected", timeout=30_000)
    page.locator("#terminal .xterm-helper-textarea").focus()
    page.keyboard.type("echo hi-$((6*7))\n")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("hi-42", timeout=30_000)
    shot("terminal")

    cpu = page.locator("#cpu-chart")
    has_points = re.compile(r"^[1-9][0-9]*$")  # the minute in progress at least
    expect(cpu).to_have_attribute("data-points", has_points, timeout=40_000)
    expect(page.locator("#mem-chart")).to_have_attribute("data-points", has_points)
    page.locator("#cpu-chart").scroll_into_view_if_needed()
    shot("charts")

    deploy = tmp_path / "fromyaml.yaml"
    app = {"name": "app", "properties": {
        "image": "corral/busybox:latest", "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}},
        "command": ["sh", "-c", "echo from-yaml; trap 'exit 0' TERM; sleep 3600 & wait"]}}
    deploy.write_text(yaml.safe_dump({
        "apiVersion": "2023-05-01", "location": "local", "name": "fromyaml",
        "type": "Microsoft.ContainerInstance/containerGroups",
        "properties": {"osType": "Linux", "restartPolicy": "Always", "containers": [app]}}))
    page.click("#nav-create")
    page.fill("#f-rg", RG)
    page.set_input_files("#f-yaml", str(deploy))
    expect(page.locator("#yaml-preview")).to_contain_text("1 container")
    expect(page.locator("#f-name")).to_have_value("fromyaml")
    shot("create-yaml")
    page.click("#create-submit")
    expect(page.locator("#group-state")).to_have_text("Running", timeout=60_000)
    expect(page.locator("#logs")).to_contain_text("from-yaml", timeout=30_000)

    page.goto(f"{base}#/rg/{RG}")
    expect(page.locator("#group-rows tr")).to_have_count(2)
    expect(page.locator("#group-rows")).to_contain_text("Running")
    shot("resource-group")

    page.click("#nav-nodes")
    expect(page.locator("#nodes tbody tr")).to_have_count(1)
    expect(page.locator("#nodes")).to_contain_text("Ready")
    expect(page.locator("#nodes")).to_contain_text("0.35 /")  # the two groups' requested cores
    shot("nodes")

    page.click("#nav-usage")
    expect(page.locator(f"#usage-rgs tr[data-rg='{RG}']")).to_be_visible()
    expect(page.locator("#usage-chart")).to_be_visible()
    shot("usage")

    # An NGroup of 2 busybox httpd members, listed, linked from its resource group, scaled to 3 from its page.
    client = server.client()
    put_profile(client, NG_RG, "member", profile_body("portal"))
    resp = put_ngroup(client, NG_RG, "web", ngroup_body(client, NG_RG, "member", 2, mode="Manual"))
    assert client.wait_operation(resp, timeout=90)["status"] == "Succeeded"
    page.click("#nav-ngroups")
    expect(page.locator("#ngroup-rows tr[data-ngroup='web']")).to_contain_text(NG_RG)
    shot("ngroups")
    page.goto(f"{base}#/rg/{NG_RG}")
    page.click("#ngroup-rows a")
    expect(page.locator("#member-rows tr")).to_have_count(2)
    expect(page.locator("#ng-ready")).to_have_text("2 / 2", timeout=30_000)
    page.fill("#ng-desired", "3")
    page.click("#ng-scale")
    expect(page.locator("#member-rows tr")).to_have_count(3, timeout=60_000)
    expect(page.locator("#ng-ready")).to_have_text("3 / 3", timeout=60_000)
    expect(page.locator("#ngroup-phase")).to_have_text("Steady")
    expect(page.locator("#cpu-chart")).to_have_attribute("data-points", has_points, timeout=40_000)
    shot("ngroup-scaled")
    assert get_ngroup(client, NG_RG, "web")["properties"]["elasticProfile"]["desiredCount"] == 3

    page.goto(f"{base}#/rg/{RG}/g/web")
    expect(page.locator("#group-state")).to_have_text("Running")
    page.click("#delete")
    page.click("#confirm-yes")
    expect(page.locator("#group-rows tr")).to_have_count(1, timeout=60_000)  # back on the resource group
    shot("deleted")

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "corral_session"]
    page.goto(f"{base}#/nodes")
    expect(page.locator("#login-form")).to_be_visible()
    status = page.evaluate("async () => (await fetch('/portal/api/nodes')).status")
    assert status == 401
    shot("logged-out")
    delete(server.client(), RG, "fromyaml")
