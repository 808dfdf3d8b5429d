"""Headless Chromium (Debian's) driven over the DevTools protocol: what a person sees and does in a page.

The browser tests of Airflow's UI and of the CTR dashboard use it, and so does the command that
takes the README's screenshots of a running page:

    python -m tests.browser URL PNG [--until TEXT] [--width 1400]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from devstack.probes import free_ports


class Browser:
    """One headless Chromium with one page, its profile in ``home``."""

    def __init__(self, home: Path, width: int = 1400, height: int = 1000):
        import websockets.sync.client

        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        assert executable, "Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
        (port,) = free_ports(1)
        self.width = width
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={home / 'chromium'}", f"--remote-debugging-port={port}",
             f"--window-size={width},{height}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                page = next(p for p in pages if p["type"] == "page")
                break
            except (httpx.HTTPError, StopIteration):
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise AssertionError("Chromium did not open its DevTools port") from None
                time.sleep(0.3)
        self.socket = websockets.sync.client.connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        self._id = 0

    def call(self, method: str, **params):
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                         awaitPromise=True).get("result", {}).get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_until(self, what: str, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"the page never showed {what}; it shows: {self.evaluate('document.body.innerText')!r:.500}")

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(10)


# A Streamlit page still loading or reading again: a spinner, a skeleton, elements greyed out as stale.
SETTLING = "[data-testid=stSpinner], [data-testid=stSkeleton], [data-stale=true]"
# How tall a Streamlit page is: its main block scrolls inside a viewport-high container.
STREAMLIT_HEIGHT = ("Math.max(document.body.scrollHeight, ...Array.from(document.querySelectorAll("
                    "'[data-testid=stMain], [data-testid=stMainBlockContainer]')).map(e => e.scrollHeight))")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser", description="A screenshot of a page, whole.")
    parser.add_argument("url")
    parser.add_argument("png", type=Path)
    parser.add_argument("--until", default="", help="wait until the page's text holds this and nothing is loading")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="screenshot-", ignore_cleanup_errors=True) as home:
        browser = Browser(Path(home), width=args.width)
        try:
            browser.open(args.url)
            settled = f"document.body.innerText.includes({json.dumps(args.until)}) && !document.querySelector({SETTLING!r})"
            browser.wait_until(repr(args.until), settled, args.timeout)
            time.sleep(2.0)  # charts draw after their data arrives
            height = int(browser.evaluate(STREAMLIT_HEIGHT)) + 80
            browser.call("Emulation.setDeviceMetricsOverride", width=args.width, height=height, deviceScaleFactor=1,
                         mobile=False)
            time.sleep(1.0)  # laid out again at the new size
            browser.wait_until("the page settled after the resize", settled, args.timeout)
            browser.screenshot(args.png)
        finally:
            browser.close()
    print(f"{args.png}: {args.width} x {height} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
