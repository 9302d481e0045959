"""The web explorer in headless Chromium (Debian's /usr/bin/chromium driven by Playwright)."""

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage"]


@pytest.fixture()
def browser_page(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `apt-get install -y chromium` (scripts/setup.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            yield page, requests
        finally:
            context.close()


@pytest.mark.slow
def test_explorer_finds_toy_story_and_shows_two_runs_with_posters(
        serve_runs, start_server, browser_page, tmp_path):
    from PIL import Image

    page, requests = browser_page
    server = start_server(serve_runs[0], "--compare", serve_runs[1],
                          "--state-dir", tmp_path / "state")
    page.goto(server.url + "/")
    page.fill("#search", "Toy Story")
    page.press("#search", "Enter")
    page.locator('button.result[data-item="1"]').click()
    page.wait_for_selector('body[data-loaded="1"]', timeout=20_000)
    assert page.inner_text("#selected-title") == "Toy Story (1995)"
    for run in ("main", "compare"):
        items = page.locator(f'.column[data-run="{run}"] li.rel-item')
        assert items.count() == 10
        assert "co-engaged" in items.first.inner_text()
    # posters actually decoded (not broken images), in both columns
    page.wait_for_function("""() => {
        const cols = [...document.querySelectorAll('.column')];
        return cols.length === 2 && cols.every(c =>
            [...c.querySelectorAll('img')].some(i => i.complete && i.naturalWidth > 0));
    }""", timeout=20_000)
    assert page.evaluate("document.querySelector('#selected img').naturalWidth") > 0
    # the two runs are different models: their lists differ
    lists = [page.locator(f'.column[data-run="{run}"] li.rel-item').evaluate_all(
        "items => items.map(i => i.dataset.item)") for run in ("main", "compare")]
    assert lists[0] != lists[1]
    assert page.is_hidden("#alpha-box")  # single-head models: no α slider
    # nothing was fetched from anywhere but the server itself
    assert all(url.startswith(server.url) for url in requests), \
        [u for u in requests if not u.startswith(server.url)]
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)
    assert len(colours) > 500, "screenshot looks blank"
    assert max(count for count, _ in colours) < 0.9 * image.width * image.height


@pytest.mark.slow
def test_explorer_links_compare_alpha_and_diversify(serve_runs, start_server, browser_page,
                                                    tmp_path):
    """Each item has a link naming it (shareable, survives a reload); the compare view is a
    toggle on the page; the α slider (two-head runs) and the diversify toggle (runs with a
    re-ranker) reach the API."""
    import json

    page, requests = browser_page
    server = start_server(serve_runs[0], "--compare", serve_runs[1],
                          "--state-dir", tmp_path / "state")
    page.goto(server.url + "/?item=1&k=5")
    page.wait_for_selector('body[data-loaded="1"]', timeout=20_000)
    assert page.inner_text("#selected-title") == "Toy Story (1995)"
    assert page.locator('.column[data-run="main"] li.rel-item').count() == 5
    assert "item=1" in page.url and "item=1" in page.get_attribute("#share", "href")
    # a related item's link names it: following it shows its own list, and so does a reload
    first = page.locator('.column[data-run="main"] li.rel-item').first
    target = first.get_attribute("data-item")
    first.locator("a.item-link").click()
    page.wait_for_selector(f'body[data-loaded="{target}"]', timeout=20_000)
    assert f"item={target}" in page.url
    title = page.inner_text("#selected-title")
    page.reload()
    page.wait_for_selector(f'body[data-loaded="{target}"]', timeout=20_000)
    assert page.inner_text("#selected-title") == title
    # the compare view: on by default with a compare run, off and on again from the page
    assert page.is_visible("#compare-box") and page.locator(".column").count() == 2
    page.uncheck("#compare")
    page.wait_for_function("document.querySelectorAll('.column').length === 1")
    assert "compare=0" in page.url
    page.check("#compare")
    page.wait_for_function("document.querySelectorAll('.column').length === 2")
    # single-head runs without a re-ranker: no α slider, diversify offered but disabled
    assert page.is_hidden("#alpha-box") and page.is_disabled("#diversify")

    # a two-head run with a re-ranker (the run list rewritten in the browser): the controls
    # appear and their values reach the API
    def two_heads(route):
        body = json.loads(route.fetch().text())
        for run in body["runs"]:
            run["two_heads"], run["reranker"] = True, True
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/v1/runs", two_heads)
    page.goto(server.url + "/?item=1&k=5&alpha=0.3")
    page.wait_for_selector('body[data-loaded="1"]', timeout=20_000)
    assert page.is_visible("#alpha-box") and page.input_value("#alpha") == "0.3"
    assert any("/related" in url and "alpha=0.3" in url for url in requests)
    page.evaluate("""() => { const a = document.querySelector('#alpha'); a.value = '0.7';
                              a.dispatchEvent(new Event('input')); }""")
    page.wait_for_function("location.search.includes('alpha=0.7')")
    assert not page.is_disabled("#diversify")
    page.check("#diversify")
    page.wait_for_function("location.search.includes('diversify=1')")
    page.wait_for_function(
        "[...document.querySelectorAll('.column .error')].some(e => "
        "e.textContent.includes('not available'))")  # the real runs have no re-ranker: 422
    assert any("diversify=true" in url for url in requests)
