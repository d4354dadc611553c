"""Load an HTML file in headless Chromium and report what the browser saw.

``probe(path)`` opens a copy of the page with a small script injected first in
``<head>``: it records every console error and every failed resource load, and
at the ``load`` event writes, into the DOM, each ``<img>``'s decode state
(``complete`` and ``naturalWidth``) and the page height. ``--dump-dom`` returns
the DOM after the load, from which the record is read back. ``screenshot``
then photographs the original page at its full height.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """<script>
window.__bnlab_errors = [];
(function () {
  const original = console.error;
  console.error = function (...args) { window.__bnlab_errors.push(args.join(" ")); original.apply(console, args); };
  window.addEventListener("error", function (e) {
    window.__bnlab_errors.push(e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "?")));
  }, true);
  window.addEventListener("load", function () {
    const out = document.createElement("pre");
    out.id = "bnlab-probe";
    out.textContent = JSON.stringify({
      images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, shown: i.getBoundingClientRect().width, narrow: i.currentSrc !== i.src})),
      viewport: window.innerWidth,
      page_width: document.documentElement.scrollWidth,
      tables: Array.from(document.querySelectorAll(".wide")).map(w => ({scrolls: w.scrollWidth > w.clientWidth, hint: (w.nextElementSibling && w.nextElementSibling.className === "scroll-hint") ? getComputedStyle(w.nextElementSibling).display : "absent"})),
      errors: window.__bnlab_errors,
      height: document.documentElement.scrollHeight,
      title: document.title,
    });
    document.body.appendChild(out);
  });
})();
</script>"""


def find_chromium() -> str | None:
    """Chromium's executable: ``$BNLAB_CHROMIUM`` or the first found on PATH."""
    explicit = os.environ.get("BNLAB_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir() -> Path:
    """Where test artifacts go: ``$BNLAB_ARTIFACTS`` or ``artifacts/`` at the repository root."""
    path = Path(os.environ.get("BNLAB_ARTIFACTS", REPO / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(
    chromium: str, args: list[str], profile: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    cmd = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def probe(chromium: str, page: Path, width: int | None = None) -> dict:
    """Load ``page`` (in a ``width`` CSS px wide window when given) and return ``{"images":
    [...], "errors": [...], "height", "title", "viewport", "page_width", "tables"}``: per image
    its decode state, its shown width and whether the ``<picture>``'s narrow source was chosen;
    per ``.wide`` table box whether it scrolls and how its scroll hint is displayed."""
    text = page.read_text(encoding="utf-8")
    injected = re.sub(r"<head>", "<head>" + _PROBE, text, count=1)
    assert injected != text, "the page has no <head>"
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / page.name
        probed.write_text(injected, encoding="utf-8")
        result = _run(
            chromium,
            [
                "--virtual-time-budget=10000",
                *([f"--window-size={width},2000"] if width else []),
                "--dump-dom",
                probed.as_uri(),
            ],
            str(Path(tmp) / "profile"),
        )
    match = re.search(r'<pre id="bnlab-probe">(.*?)</pre>', result.stdout, re.S)
    assert match, (
        f"Chromium did not load the page (rc={result.returncode}): {result.stderr[-2000:]}"
    )
    record = json.loads(html.unescape(match.group(1)))
    record["stderr"] = result.stderr
    return record


def screenshot(
    chromium: str, page: Path, out: Path, *, width: int = 1280, height: int = 2000
) -> Path:
    """A PNG of ``page`` rendered ``width`` x ``height`` CSS pixels."""
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            chromium,
            [f"--screenshot={out}", f"--window-size={width},{height}", page.resolve().as_uri()],
            str(Path(tmp) / "profile"),
        )
    return out
