"""Helpers of the dashboard tests: sign in over plain HTTP, read a page's CSRF token, and a
headless Debian chromium driven by Playwright (never ``playwright install``)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.harness import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


def signed_in(server: Server, token: str | None = None) -> httpx.Client:
    """An HTTP client holding a dashboard session (cookies as a browser keeps them)."""
    client = httpx.Client(base_url=server.url, timeout=30)
    form = client.get("/dashboard/login")
    r = client.post("/dashboard/login", data={
        "csrf": csrf_of(form.text), "token": token or server.token, "next": "/dashboard",
    })
    assert r.status_code == 303, r.text
    return client


@contextmanager
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
