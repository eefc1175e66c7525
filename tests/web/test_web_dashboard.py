"""The dashboard in headless Chromium (Debian's, driven by Playwright): a finished call is in the
list, and its page draws the SIP ladder with the BYE and its headers highlighted.

Skipped without Playwright or /usr/bin/chromium unless ``BYELINE_REQUIRE_BROWSER`` is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from web_harness import TOKEN, Served

from byeline.five9.simulator import Press, Wait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("BYELINE_SCREENSHOTS", "/tmp"))

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

if async_playwright is None or not Path(CHROMIUM).exists():
    if os.environ.get("BYELINE_REQUIRE_BROWSER"):
        raise RuntimeError("BYELINE_REQUIRE_BROWSER is set but Playwright or chromium is missing")
    pytest.skip("Playwright or Debian's chromium absent", allow_module_level=True)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.mark.timeout(90)
async def test_call_list_and_ladder(served: Served, tmp_path: Path) -> None:
    await served.call("300000000401", actions=[Wait(0.2), Press("1")])
    await served.call("300000000402", hangup_after=0.3)
    store = served.app.store
    await store.aflush()
    [routed] = store.list_calls(five9_call_id="300000000401")
    store.transcript(routed.call_id, "agent", "Say billing or press 1.")
    store.transcript(routed.call_id, "caller", "one")
    await store.aflush()

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            page.set_default_timeout(15_000)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            # Without the session cookie the dashboard asks for the token.
            await page.goto(served.base + "/ui/")
            assert "/ui/login" in page.url
            await page.fill("input[name=token]", "wrong")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#failed:not([hidden])")
            await page.fill("input[name=token]", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(served.base + "/ui/")

            # The call list shows both finished calls with outcome and delivery.
            row = page.locator(f'#recent tr[data-call="{routed.call_id}"]')
            await row.wait_for()
            assert "delivered" in await row.inner_text()
            assert "Billing" in await row.inner_text()
            hung_up = page.locator("#recent tr.delivery-not_sent")
            assert "caller" in await hung_up.inner_text()
            assert await page.locator("#live-empty").is_visible()
            await page.screenshot(path=str(SCREENSHOTS / "byeline-dashboard-calls.png"))

            # The call's page: the ladder, the BYE highlighted with its X- headers.
            await row.locator("a").click()
            await page.wait_for_url(f"**/ui/calls/{routed.call_id}")
            bye = page.locator("#ladder g.msg.bye")
            await bye.wait_for()
            assert await bye.count() == 1
            bye_text = await bye.text_content() or ""
            assert "BYE" in bye_text
            assert "X-RouteType: skill_transfer" in bye_text
            assert "X-RouteValue: Billing" in bye_text
            labels = await page.locator("#ladder g.msg .label").all_text_contents()
            assert labels[0] == "INVITE" and "ACK" in labels
            assert any(label.startswith("200 OK (BYE)") for label in labels)
            # In time order, the BYE after the ACK and before Five9's answer to it.
            assert labels.index("ACK") < labels.index("BYE") < len(labels) - 1
            await bye.click()
            assert "X-RouteValue: Billing" in await page.locator("#raw").inner_text()
            handoff = await page.locator("#handoff").inner_text()
            assert "X-RouteValue" in handoff and "delivered" in handoff
            attributes = await page.locator("#attributes").inner_text()
            assert "five9.route_value" in attributes
            transcript = await page.locator("#transcript").inner_text()
            assert "Say billing or press 1." in transcript
            await page.screenshot(
                path=str(SCREENSHOTS / "byeline-dashboard-call.png"), full_page=True
            )
        finally:
            await browser.close()
    assert problems == []
