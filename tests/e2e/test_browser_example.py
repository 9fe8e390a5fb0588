"""The browser inbox example against a real `tidings serve`, in headless Chromium.

The page is served from its own origin, as a web app would be, so this also checks the CORS
settings a browser needs: the preflight of the inbox calls and the WebSocket with `?token=`."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import ON_CI
from tests.e2e.test_serve import start, stop

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inbox"
ADMIN_KEY = "tda_browser-example-admin-0123456789"
# What Chromium needs to start headless in a container and stay off the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000  # a bound on waiting for the page, not a figure the test checks


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_origin() -> Iterator[str]:
    """The example's files, served from their own origin as a web app's would be."""
    handler = functools.partial(_QuietHandler, directory=str(EXAMPLE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    if ON_CI:
        pytest.fail(message + "; CI=true: the browser example must be tested")
    pytest.skip(message)


def test_inbox_page_follows_the_stream(tmp_path: Path, page_origin: str) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    env = {"TIDINGS_ADMIN_KEY": ADMIN_KEY, "TIDINGS_CORS_ORIGINS": f'["{page_origin}"]',
           "TIDINGS_RATE_LIMIT_PER_SECOND": "0"}
    proc, port = start(tmp_path, env)
    api = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=api, timeout=10) as c:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            assert c.put("/v1/apps/shop", json={"name": "Shop"}, headers=admin).status_code == 201
            key = {"Authorization": f"Bearer {c.post('/v1/apps/shop/keys', headers=admin).json()['key']}"}
            token = c.post("/v1/users/ada/tokens", headers=key).json()["token"]

            def send(title: str, body: str) -> str:
                r = c.post("/v1/notifications", headers=key, json={
                    "to": {"user_ids": ["ada"]}, "channels": ["in_app"], "title": title, "body": body})
                assert r.status_code == 202, r.text
                return str(r.json()["items"][0]["id"])

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"{page_origin}/index.html?{urlencode({'api': api, 'token': token})}")

                    count, items = page.locator("#count"), page.locator("#list li")
                    expect(page.locator("#status")).to_have_text("Live.", timeout=WAIT_MS)
                    expect(count).to_have_text("0")
                    expect(items).to_have_count(0)
                    assert "token" not in page.url  # the page takes it out of the address bar

                    first = send("Your order shipped", "It arrives on Tuesday.")
                    item = page.locator(f'#list li[data-id="{first}"]')
                    expect(item).to_have_class("unread", timeout=WAIT_MS)
                    expect(item.locator("strong")).to_have_text("Your order shipped")
                    expect(count).to_have_text("1", timeout=WAIT_MS)

                    item.click()
                    expect(item).to_have_class("read", timeout=WAIT_MS)
                    expect(count).to_have_text("0", timeout=WAIT_MS)
                    inbox = c.get("/v1/users/ada/notifications?channel=in_app", headers=key).json()
                    assert inbox["unread_count"] == 0 and inbox["items"][0]["read_at"]

                    # Text from the notification stays text: no markup, no script runs.
                    markup = '<img src=x onerror="document.title=\'owned\'"><b>bold</b>'
                    second = send(markup, "<script>document.title='owned'</script>")
                    newest = items.first
                    expect(newest).to_have_attribute("data-id", second, timeout=WAIT_MS)
                    expect(newest.locator("strong")).to_have_text(markup)
                    expect(count).to_have_text("1", timeout=WAIT_MS)
                    expect(items).to_have_count(2)
                    assert page.locator("#list img, #list b, #list script").count() == 0
                    assert page.title() == "Tidings inbox"

                    page.locator("#read-all").click()
                    expect(count).to_have_text("0", timeout=WAIT_MS)
                    expect(page.locator("#list li.unread")).to_have_count(0)
                    assert errors == []
                finally:
                    browser.close()
            inbox = c.get("/v1/users/ada/notifications?channel=in_app", headers=key).json()
            assert inbox["unread_count"] == 0
    finally:
        stop(proc)
