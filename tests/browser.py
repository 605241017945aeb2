"""Open a local HTML file in headless Chromium and report what a reader would get (a test helper).

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-terminated JSON
on file descriptors 3 and 4): no websocket client, no extra package, no port, and it works offline.
Every request other than the page itself is failed before it leaves the browser (Fetch domain) and
recorded, and host names resolve to nothing, so a report that is not self-contained shows up as a
recorded request instead of quietly loading something from the internet.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--remote-debugging-pipe",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often give /dev/shm 64 MB
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # belt and braces: no name resolves
    "--mute-audio",
]


def find_chromium() -> str | None:
    """$LMTUNE_CHROMIUM, else the first Chromium/Chrome on PATH."""
    return os.environ.get("LMTUNE_CHROMIUM") or next(filter(None, map(shutil.which, NAMES)), None)


@dataclass
class Page:
    text: str  # document.body.innerText: what is rendered visible
    images: list[dict]  # per <img>: src (first 60 chars), complete, naturalWidth
    console: list[str] = field(default_factory=list)  # "level: text" of every console call and log entry
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, error-level console/log entries
    requests: list[str] = field(default_factory=list)  # every URL asked for besides the page and data:
    failed: list[str] = field(default_factory=list)  # requests that failed: blocked or broken

    @property
    def decoded(self) -> int:
        """Images that actually decoded (naturalWidth > 0): a broken data: URI loads but decodes to 0."""
        return sum(image["naturalWidth"] > 0 for image in self.images)


class _Pipe:
    """Commands out on one pipe, responses and events in on the other; events are handed to `on_event`."""

    def __init__(self, read_fd: int, write_fd: int, on_event, deadline: float):
        self.read_fd, self.write_fd, self.on_event, self.deadline = read_fd, write_fd, on_event, deadline
        self.buffer, self.next_id, self.responses = b"", 0, {}

    def post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait for its answer; a protocol error raises."""
        wanted = self.post(method, params, session)
        self.pump(lambda: wanted in self.responses, f"the answer to {method}")
        answer = self.responses.pop(wanted)
        if "error" in answer:
            raise RuntimeError(f"chromium: {method}: {answer['error']}")
        return answer.get("result", {})

    def pump(self, done, what: str) -> None:
        """Read messages until done() holds; past the deadline raise TimeoutError naming `what`."""
        while not done():
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium: no {what} in time")
            if not select.select([self.read_fd], [], [], left)[0]:
                continue
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited while waiting for {what}")
            self.buffer += chunk
            *messages, self.buffer = self.buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self.responses[message["id"]] = message
                else:
                    self.on_event(message)


def _console_text(params: dict) -> str:
    args = params.get("args", [])
    return " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)


class _Recorder:
    """What the page did: console output, exceptions, requests (each one failed unless it is the page)."""

    def __init__(self, page_url: str):
        self.page_url, self.page, self.pipe = page_url, Page("", []), None
        self.loaded, self.urls, self.session = False, {}, None

    def __call__(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        page = self.page
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if url == self.page_url:
                self.pipe.post("Fetch.continueRequest", {"requestId": params["requestId"]}, self.session)
            else:
                self._request(url)
                reason = {"requestId": params["requestId"], "errorReason": "BlockedByClient"}
                self.pipe.post("Fetch.failRequest", reason, self.session)
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self.urls[params["requestId"]] = url
            if url != self.page_url and not url.startswith("data:"):
                self._request(url)
        elif method == "Network.loadingFailed":
            url = self.urls.get(params["requestId"], "?")
            page.failed.append(f"{url[:80]}: {params.get('errorText', '')}")
        elif method == "Runtime.consoleAPICalled":
            self._console(params["type"], _console_text(params))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            page.errors.append(f"exception: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self._console(entry["level"], f"[{entry.get('source')}] {entry.get('text', '')}")
        elif method == "Page.loadEventFired":
            self.loaded = True

    def _request(self, url: str) -> None:
        if url not in self.page.requests:
            self.page.requests.append(url)

    def _console(self, level: str, text: str) -> None:
        self.page.console.append(f"{level}: {text}")
        if level in ("error", "assert"):
            self.page.errors.append(f"{level}: {text}")


# every <img> decoded (or failed to) before the images are counted
PROBE = """(async () => {
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  return {text: document.body ? document.body.innerText : "",
          images: [...document.images].map(i => ({src: i.getAttribute("src").slice(0, 60),
                                                 complete: i.complete, naturalWidth: i.naturalWidth}))};
})()"""


def open_page(path: str | Path, *, timeout: float = 60.0, executable: str | None = None) -> Page:
    """Load `path` in a fresh headless Chromium (own profile, network blocked) and report the page."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install chromium, or set LMTUNE_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="lmtune-chromium-")
    flags = [*FLAGS, f"--user-data-dir={profile}"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to sandbox as root
    to_browser, from_browser = os.pipe(), os.pipe()
    log = open(Path(profile) / "stderr.log", "wb")  # noqa: SIM115 - closed in finally
    pid = os.posix_spawn(
        executable,
        [executable, *flags, "about:blank"],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, to_browser[0], 3),  # the browser reads commands on fd 3
            (os.POSIX_SPAWN_DUP2, from_browser[1], 4),  # and writes answers on fd 4
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ],
        setsid=True,  # its own process group: the zygote and renderers end with it
    )
    os.close(to_browser[0])
    os.close(from_browser[1])
    recorder = _Recorder(url)
    pipe = _Pipe(from_browser[0], to_browser[1], recorder, time.monotonic() + timeout)
    recorder.pipe = pipe
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        recorder.session = session
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", {}, session)
        pipe.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session)
        pipe.call("Page.navigate", {"url": url}, session)
        pipe.pump(lambda: recorder.loaded, "load event")
        probe = {"expression": PROBE, "awaitPromise": True, "returnByValue": True}
        found = pipe.call("Runtime.evaluate", probe, session)["result"]["value"]
        recorder.page.text, recorder.page.images = found["text"], found["images"]
        pipe.call("Browser.close")
    except (RuntimeError, TimeoutError) as exc:
        log.flush()
        tail = (Path(profile) / "stderr.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}\n--- chromium stderr ---\n{tail}") from None
    finally:
        _stop(pid)
        for fd in (to_browser[1], from_browser[0]):
            os.close(fd)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
    return recorder.page


def _stop(pid: int, grace: float = 5.0) -> None:
    """Wait for the browser to exit after Browser.close; kill its process group if it lingers."""
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            break
        time.sleep(0.05)
    else:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # helpers (zygote, renderers) still in the group
