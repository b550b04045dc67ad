"""Screenshots of the built site with headless Chromium (Debian's ``chromium`` package): the home page
and a gallery page, to look at what a reader sees.

    mkdocs build --strict && python docs/screenshot.py [--out build/screenshots]

The site is served from ``site/`` on a loopback port for the duration (material's search and fonts
need http, not file://); each page is written as ``<out>/<name>.png``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "home": "",
    "gallery_interpolation_2d": "gallery/interpolation_2d/",
    "benchmark_plots": "benchmark_plots/",
    "api": "api/",
}


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves the site without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "build" / "screenshots"))
    parser.add_argument("--site", default=str(ROOT / "site"))
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("no headless browser found: apt-get install chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(Quiet, directory=args.site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, page in PAGES.items():
            url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
            command = [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",
            ]
            command += ["--window-size=1280,1600", f"--screenshot={out / name}.png", url]
            subprocess.run(command, check=True, capture_output=True, timeout=120)
            print(f"{url} -> {out / name}.png")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
