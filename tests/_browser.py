"""Drive Debian's headless Chromium through the Chrome DevTools Protocol (websockets, no driver)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no chromium on PATH: scripts/setup.sh installs Debian's chromium")


class Chromium:
    def __init__(self, workdir: Path, timeout: float = 60):
        self.profile = Path(workdir) / "chromium-profile"
        self.timeout = timeout
        self.proc = None

    def __enter__(self) -> "Chromium":
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def page_ws_url(self) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=5).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise RuntimeError("chromium has no page target")

    async def search_page(self, url: str, query: str) -> list[dict]:
        """Open the search page, type ``query`` into the box, press Enter; the result rows as shown."""
        from websockets.asyncio.client import connect

        async with connect(self.page_ws_url(), max_size=None) as ws:
            cdp = _Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Page.navigate", {"url": url})
            await cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('q')",
                               self.timeout)
            await cdp.wait_for("document.getElementById('meta').textContent.includes('documents')", self.timeout)
            await cdp.eval("document.getElementById('q').focus()")
            await cdp.call("Input.insertText", {"text": query})
            for kind in ("keyDown", "keyUp"):
                await cdp.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                          "windowsVirtualKeyCode": 13, "text": "\r"})
            await cdp.wait_for("document.querySelectorAll('#results li.hit').length > 0", self.timeout)
            return json.loads(await cdp.eval("""JSON.stringify([...document.querySelectorAll('#results li.hit')].map(
                li => ({score: li.querySelector('.score').textContent, text: li.querySelector('.text').textContent,
                        id: li.querySelector('.id').textContent,
                        meta: [...li.querySelectorAll('.meta span')].map(s => s.textContent)})))"""))

    async def linked_search(self, url: str, screenshot: Path | None = None) -> dict:
        """Open a search linked by its URL (``/?q=...``); the rows as shown (with the marked passage),
        whether Chinese glyphs render (two different characters drawn with the page's font give
        different pixels: missing glyphs are drawn as identical boxes), and optionally a PNG."""
        import base64

        from websockets.asyncio.client import connect

        async with connect(self.page_ws_url(), max_size=None) as ws:
            cdp = _Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Page.navigate", {"url": url})
            await cdp.wait_for("document.querySelectorAll('#results li.hit').length > 0", self.timeout)
            rows = json.loads(await cdp.eval("""JSON.stringify([...document.querySelectorAll('#results li.hit')].map(
                li => ({text: li.querySelector('.text').textContent, id: li.querySelector('.id').textContent,
                        mark: (li.querySelector('.doc mark') || {}).textContent || null,
                        where: (li.querySelector('.where') || {}).textContent || null})))"""))
            glyphs = await cdp.eval("""(() => {
                const c = document.createElement('canvas'); c.width = c.height = 48;
                const g = c.getContext('2d');
                g.font = '40px ' + getComputedStyle(document.body).fontFamily;
                const draw = (ch) => { g.clearRect(0, 0, 48, 48); g.fillText(ch, 2, 40);
                                       return Array.from(g.getImageData(0, 0, 48, 48).data).join(','); };
                const a = draw('中'), b = draw('国'), blank = draw(' ');
                return a !== b && a !== blank; })()""")
            state = {"q": await cdp.eval("document.getElementById('q').value"),
                     "k": await cdp.eval("document.getElementById('k').value"),
                     "mode": await cdp.eval("document.getElementById('mode').value")}
            if screenshot is not None:
                shot = await cdp.call("Page.captureScreenshot", {"format": "png"})
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            return {"rows": rows, "cjk_glyphs": glyphs, "state": state}

    async def docs_page(self, url: str) -> list[str]:
        """Open the Swagger UI page; the operations it lists ("POST /search", ...) once rendered."""
        from websockets.asyncio.client import connect

        async with connect(self.page_ws_url(), max_size=None) as ws:
            cdp = _Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Page.navigate", {"url": url})
            await cdp.wait_for("document.querySelectorAll('.opblock').length > 0", self.timeout)
            return json.loads(await cdp.eval("""JSON.stringify([...document.querySelectorAll('.opblock-summary')].map(
                s => s.querySelector('.opblock-summary-method').textContent + ' ' +
                     s.querySelector('.opblock-summary-path').getAttribute('data-path')))"""))


class _Cdp:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def eval(self, expression: str):
        r = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                 "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, condition: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.eval(f"!!({condition})"):
                return
            await asyncio.sleep(0.05)
        status = await self.eval("(document.getElementById('status') || {}).textContent")
        raise TimeoutError(f"page never satisfied {condition!r} (status line: {status!r})")
