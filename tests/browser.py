"""Open a local HTML file in a real headless Chromium and report what a reader would see.

Used by the report's browser test: every image decoded (natural width > 0), no console
message or page error, every in-page link resolving to an element, where each heading sits,
and a screenshot. No Python browser bindings: Chromium's own ``--dump-dom`` (after load) and
``--screenshot`` flags, with a checking script injected into a copy of the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1280, 900)

# Injected first into <head>: records console.error calls, page errors and failed resource
# loads, then on `load` writes what the page holds into a <pre> that --dump-dom prints.
CHECK_SCRIPT = """<script>
window.__gt = {errors: []};
(function () {
  var orig = console.error;
  console.error = function () {
    window.__gt.errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
  window.addEventListener('error', function (e) {
    var t = e.target;
    window.__gt.errors.push('error: ' + (e.message || (t && (t.currentSrc || t.src || t.href)) || 'a resource failed to load'));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { window.__gt.errors.push('unhandledrejection: ' + e.reason); });
  window.addEventListener('load', function () {
    var map = Array.prototype.map;
    var images = map.call(document.images, function (i) {
      return {alt: i.alt.slice(0, 80), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
    });
    var links = map.call(document.querySelectorAll('a[href^="#"]'), function (a) {
      var id = decodeURIComponent(a.getAttribute('href').slice(1));
      return {href: a.getAttribute('href'), resolves: id === '' || document.getElementById(id) !== null};
    });
    var headings = map.call(document.querySelectorAll('h2'), function (h) {
      return {text: h.textContent, top: h.getBoundingClientRect().top};
    });
    var answer = document.querySelector('section.answer');
    var out = document.createElement('pre');
    out.id = '__gt_check';
    out.textContent = JSON.stringify({
      images: images, links: links, errors: window.__gt.errors, headings: headings,
      viewport: window.innerHeight, answer_bottom: answer ? answer.getBoundingClientRect().bottom : null,
      answer_text: answer ? answer.innerText : ''
    });
    document.body.appendChild(out);
  });
})();
</script>"""


def find_chromium() -> str | None:
    """The browser binary: ``$GROKTRANSFER_CHROMIUM`` or the first of ``CANDIDATES`` on PATH."""
    given = os.environ.get("GROKTRANSFER_CHROMIUM")
    if given:
        return given if shutil.which(given) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def _run(browser: str, args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; only local files are opened.
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def inspect_page(browser: str, page: Path) -> dict:
    """Load a copy of ``page`` with the checking script; its findings plus ``console`` (stderr's console lines)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "check.html"
        copy.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + CHECK_SCRIPT, 1), encoding="utf-8")
        # images are embedded, but keep relative paths working for pages that link files
        for item in page.parent.iterdir():
            if item.is_file() and item.suffix.lower() in {".png", ".svg", ".jpg", ".css"}:
                shutil.copy(item, Path(tmp) / item.name)
        proc = _run(browser, ["--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom",
                              copy.as_uri()], Path(tmp) / "profile")  # fmt: skip
    found = re.search(r'<pre id="__gt_check">(.*?)</pre>', proc.stdout, flags=re.S)
    if not found:
        raise RuntimeError(f"Chromium printed no check result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    import html as _html

    result = json.loads(_html.unescape(found.group(1)))
    # Chromium logs every console message of the page to stderr as ...:CONSOLE:<line>] "<message>"
    result["console"] = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return result


def screenshot(browser: str, page: Path, out: Path) -> Path:
    """A PNG of the first screen (``WINDOW``) of ``page``, as a reader opening it sees it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = _run(browser, [f"--screenshot={out.resolve()}", page.resolve().as_uri()], Path(tmp) / "profile")
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"no screenshot written (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return out
