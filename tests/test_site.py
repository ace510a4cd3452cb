"""The documentation site as a reader sees it: built with the documented command (notebooks
in quick mode) into a temporary folder, crawled for broken links and for anything fetched
from the network, and opened in headless Chromium (images load, equations are typeset).

Skips, visibly, where the docs extra (``pip install -e ".[docs]"``) or Chromium is missing.
"""
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
# Notebook 05: equations, and in a full build its figures (quick mode selects matplotlib's
# Agg backend in notebooks/nbsetup.py, so a quick build's notebook pages carry no figures)
NOTEBOOK_PAGE = "notebooks/05_figure1_loss_landscapes.html"
HOME_PAGE = "README.html"


def load_screenshots():
    spec = importlib.util.spec_from_file_location(
        "site_screenshots", REPO / "scripts" / "site_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git_status():
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout


def documented_build_command():
    """The README's build command (section "Documentation site"), as a list of words."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Documentation site"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return shlex.split(block.strip().split("&&")[-1])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as README "Documentation site" says, in quick mode."""
    for module in ("sphinx", "myst_nb", "furo"):
        pytest.importorskip(module, reason=f"{module} missing: the docs extra is not "
                                           "installed (pip install -e \".[docs]\")")
    out = tmp_path_factory.mktemp("docs") / "site"
    command = documented_build_command()
    assert command[:3] == ["python", "-m", "sphinx"] and "-W" in command, command
    before = git_status()
    result = subprocess.run(
        [sys.executable, *[str(out) if a == "build/site" else a for a in command[1:]], "-q"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "FFNUMPY_QUICK": "1"},
        timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert git_status() == before  # the build leaves the checkout as it was
    return out


class Links(HTMLParser):
    """Every address a page names, by tag and attribute, and every id it defines."""

    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("href", "src"):
            if attrs.get(name):
                self.refs.append((tag, attrs.get("rel") or "", attrs[name]))


def parse(page):
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def test_every_page_and_notebook_is_built(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    notebooks = sorted(REPO.glob("notebooks/[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 7
    wanted = {HOME_PAGE, "index.html", *(f"docs/{p.stem}.html" for p in
                                         (REPO / "docs").glob("*.md")),
              *(f"notebooks/{nb.stem}.html" for nb in notebooks)}
    assert wanted <= pages, wanted - pages


def test_notebooks_are_rendered_with_their_outputs(site):
    for notebook in sorted(REPO.glob("notebooks/[0-9][0-9]_*.ipynb")):
        html = (site / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
        assert "cell_output" in html, notebook.name  # executed at build time


def test_no_page_links_to_a_missing_page(site):
    ids = {}
    broken = []
    for page in sorted(site.rglob("*.html")):
        for tag, rel, ref in parse(page).refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith("//"):
                continue  # an external address (checked below: never fetched)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append((page.relative_to(site).as_posix(), ref))
            elif parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = parse(target).ids
                if unquote(parts.fragment) not in ids[target]:
                    broken.append((page.relative_to(site).as_posix(), ref))
    assert not broken, broken[:20]


def test_nothing_is_fetched_from_the_network(site):
    """Scripts, style sheets, fonts and images come with the site: no http(s) or
    protocol-relative address in a script, link or image tag, nor in a style sheet."""
    remote = re.compile(r"^(https?:)?//", re.I)
    fetched = []
    for page in sorted(site.rglob("*.html")):
        for tag, rel, ref in parse(page).refs:
            if tag == "a":
                continue  # a hyperlink a reader may follow, not fetched by the page
            if remote.match(ref):
                fetched.append((page.relative_to(site).as_posix(), tag, ref))
    for sheet in sorted(site.rglob("*.css")):
        for ref in re.findall(r"(?:url\(|@import\s+)['\"]?([^'\")\s]+)", sheet.read_text(
                encoding="utf-8", errors="replace")):
            if remote.match(ref):
                fetched.append((sheet.relative_to(site).as_posix(), "css", ref))
    assert not fetched, fetched[:20]
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()  # MathJax ships inside


@pytest.fixture(scope="module")
def browser():
    screenshots = load_screenshots()
    try:
        driver = screenshots.open_browser()
    except RuntimeError as e:
        pytest.skip(str(e))
    driver.wait_for_math = lambda: screenshots.wait_for_math(driver)
    yield driver
    driver.quit()


def open_page(browser, site, page):
    browser.get((site / page).resolve().as_uri())
    assert browser.wait_for_math() is None
    return browser


IMAGES_LOADED = """
return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,
                                             i.naturalWidth, i.naturalHeight]);
"""
RAW_MATH = r"""
const article = document.querySelector('article') || document.body;
const copy = article.cloneNode(true);
copy.querySelectorAll('pre, code, mjx-container, .highlight, script, style')
    .forEach(e => e.remove());
return copy.textContent;
"""
# what the live page (MathJax's additions included) loads: scripts, style sheets, images,
# and the addresses inside its style elements (fonts)
RESOURCES = r"""
const urls = [];
document.querySelectorAll('script[src]').forEach(e => urls.push(e.src));
document.querySelectorAll('link[href]').forEach(e => urls.push(e.href));
document.querySelectorAll('img[src]').forEach(e => urls.push(e.src));
document.querySelectorAll('style').forEach(e => {
    for (const m of e.textContent.matchAll(/url\(\s*['"]?([^'")]+)/g)) {
        urls.push(new URL(m[1], document.baseURI).href);
    }
});
return urls;
"""


def check_page(browser, site, page, min_images):
    open_page(browser, site, page)
    assert "ffnumpy" in browser.title
    images = browser.execute_script(IMAGES_LOADED)
    assert len(images) >= min_images, images
    unloaded = [i for i in images if not (i[1] and i[2] > 0 and i[3] > 0)]
    assert not unloaded, unloaded
    loaded = browser.execute_script(RESOURCES)
    assert all(r.startswith("file:") for r in loaded), [r for r in loaded
                                                       if not r.startswith("file:")]
    return images, loaded


def test_home_page_renders_with_its_figure(site, browser):
    images, _ = check_page(browser, site, HOME_PAGE, min_images=1)
    assert any("figure3_test_error" in src for src, *_ in images)
    heading = browser.execute_script("return document.querySelector('h1').textContent;")
    assert "ffnumpy" in heading
    open_page(browser, site, "index.html")  # the site's front door sends a reader home
    assert browser.current_url.endswith(HOME_PAGE)


def test_results_page_renders_its_figures(site, browser):
    images, _ = check_page(browser, site, "docs/results.html", min_images=3)
    assert any("figure4_icp_rate" in src for src, *_ in images)


def test_notebook_page_renders_figures_and_typeset_equations(site, browser):
    _, loaded = check_page(browser, site, NOTEBOOK_PAGE, min_images=0)  # each image loads
    assert any("_static/mathjax/" in r for r in loaded), loaded  # the site's own MathJax
    math = browser.execute_script(
        "return Array.from(document.querySelectorAll('.math')).map("
        "m => m.querySelector('mjx-container') !== null);")
    assert len(math) >= 5 and all(math), math  # every equation typeset by MathJax
    left = browser.execute_script(RAW_MATH)
    raw = [left[max(0, i - 40):i + 40] for i in range(len(left)) if left[i] == "$"]
    assert not raw, raw[:5]  # prose keeps no dollar sign: each one opened an equation
    assert not re.search(r"\\\(|\\\[", left)  # no delimiters left untypeset


def test_the_screenshot_script_writes_pictures(site, browser, tmp_path):
    load_screenshots().main(["--site", str(site), "--out", str(tmp_path),
                             "--pages", HOME_PAGE, NOTEBOOK_PAGE])
    pictures = sorted(tmp_path.glob("*.png"))
    assert len(pictures) == 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
