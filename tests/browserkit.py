"""A headless Chromium driven over the DevTools protocol, for testing the offline report.

Starts the system's Chromium (Debian's ``chromium`` package) in its own headless mode with a
fresh profile and no network services, reads the DevTools port from ``DevToolsActivePort``,
and talks to the page over a websocket (tornado's client: tornado comes with ``distributed``,
so no browser-automation package or browser download is needed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1280,2000",
)
"""No sandbox (tests run as root in containers), no GPU, nothing that reaches the network."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """``with Chromium() as b: b.open(url); b.evaluate(js)``."""

    def __init__(self, binary: str):
        self.binary = binary
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.ws: Any = None
        self._id = 0

    def __enter__(self) -> Chromium:
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(600):  # the browser writes the file once it listens (or exits)
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {err[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("chromium did not open its DevTools port")
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as resp:
            pages = [t for t in json.load(resp) if t.get("type") == "page"]
        from tornado.websocket import websocket_connect

        async def connect() -> Any:
            return await websocket_connect(pages[0]["webSocketDebuggerUrl"], max_message_size=2**28)

        self.ws = self.loop.run_until_complete(connect())
        self.call("Page.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _call(self, method: str, params: dict[str, Any], wait_event: str | None) -> Any:
        self._id += 1
        my_id = self._id
        await self.ws.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        result, event_seen = None, wait_event is None
        while result is None or not event_seen:
            raw = await self.ws.read_message()
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            msg = json.loads(raw)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result = msg.get("result", {})
            elif wait_event is not None and msg.get("method") == wait_event:
                event_seen = True
        return result

    def call(self, method: str, wait_event: str | None = None, **params: Any) -> Any:
        return self.loop.run_until_complete(self._call(method, params, wait_event))

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image has loaded or failed by then)."""
        self.call("Page.navigate", wait_event="Page.loadEventFired", url=url)

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        import base64

        height = self.evaluate("document.documentElement.scrollHeight")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
