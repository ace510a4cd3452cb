"""Pictures of the documentation site's pages, taken in headless Chromium, to look at.

    python scripts/site_screenshots.py                  # the site in build/site
    python scripts/site_screenshots.py --site DIR --out DIR --pages README.html docs/cli.html

Build the site first (README, "Documentation site"). Needs Debian's ``chromium`` and
``chromium-driver`` packages and selenium (``pip install -e ".[docs]"``). Writes one PNG per
page into ``build/screenshots/`` (ignored by git). ``tests/test_site.py`` opens the browser
with :func:`open_browser` too.
"""
import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = ("chromedriver",)
WINDOW = (1280, 1600)  # pixels: a laptop screen's width, tall enough for a page's first part
PAGES = ["README.html", "notebooks/01_goodness_and_ff_loss.html",
         "notebooks/07_figure3_training_curves.html", "docs/results.html", "docs/cli.html"]
MATHJAX_SECONDS = 30  # typesetting a notebook's equations takes well under a second


def find(names):
    """The first of ``names`` on the PATH, or None."""
    return next((path for path in map(shutil.which, names) if path), None)


def open_browser():
    """A headless Chromium driven through the system's chromedriver (no driver download).

    Raises
    ------
    RuntimeError
        When chromium, chromedriver or selenium is missing (the message says which).
    """
    browser, driver = find(CHROMIUM), find(CHROMEDRIVER)
    if browser is None or driver is None:
        raise RuntimeError("chromium and chromedriver are needed "
                           "(Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise RuntimeError(f"selenium is needed: pip install -e \".[docs]\" ({e})") from e
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "--allow-file-access-from-files"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait_for_math(browser):
    """Wait until MathJax has typeset the page (returns its error text, or None)."""
    browser.set_script_timeout(MATHJAX_SECONDS)
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!window.MathJax || !MathJax.startup) { done(null); return; }"
        "MathJax.startup.promise.then(() => done(null), e => done(String(e)));")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python scripts/site_screenshots.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=REPO / "build" / "site",
                        help="the built site (default: build/site)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "screenshots",
                        help="folder for the PNGs (default: build/screenshots)")
    parser.add_argument("--pages", nargs="+", default=PAGES, metavar="PAGE",
                        help="pages of the site, relative to it")
    args = parser.parse_args(argv)
    if not (args.site / "README.html").is_file():
        sys.exit(f"{args.site}: no built site there; build it first "
                 "(python -m sphinx -W --keep-going -c docs -b html . build/site)")
    try:
        browser = open_browser()
    except RuntimeError as e:
        sys.exit(str(e))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for page in args.pages:
            browser.get((args.site / page).resolve().as_uri())
            wait_for_math(browser)
            png = args.out / (page.replace("/", "_").removesuffix(".html") + ".png")
            browser.save_screenshot(str(png))
            print(png)
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
