"""The web page in a real headless Chromium: type a query, drop an audio file, "more like this".

Needs Debian's chromium (`apt-get install -y chromium`) and the `playwright` package (the test
extra); playwright's own browser download (`playwright install`) is never used.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi", reason="pip install 'emergentbridge[serve]'")

CHROMIUM = os.environ.get("EBRIDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
README_SHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"

pytestmark = pytest.mark.browser

from query.search import ROUTE_CHOICES  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser test needs playwright: pip install playwright (in the test extra); "
                    "no `playwright install` is needed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"the browser test needs chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(or set EBRIDGE_CHROMIUM to a Chromium binary)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from query.serve.app import create_app
    from query.serve.service import SearchService, ServeSettings
    from tests.serve_support import RunningServer, small_index

    index, data = small_index(tmp_path_factory)
    service = SearchService.open(index, ServeSettings(workers=2))
    try:
        with RunningServer(create_app(service)) as url:
            yield url, data
    finally:
        service.close()


def cards(page):
    return page.locator("#results article.card")


def modalities(page) -> set[str]:
    return set(cards(page).evaluate_all("els => els.map(e => e.dataset.modality)"))


def rows(page) -> list[dict]:
    """Each result row: its modality, score scale, and its cards' modalities, routes and scores, in order."""
    return page.locator("#results section.group").evaluate_all("""els => els.map(r => ({
        modality: r.dataset.modality, kind: r.dataset.scoreKind, heading: r.querySelector('h2').textContent,
        cards: [...r.querySelectorAll('article.card')].map(c => ({
            modality: c.dataset.modality, route: c.querySelector('.route').textContent,
            score: c.querySelector('.score').textContent}))}))""")


def check_rows(page, expected: set[str], per_row: int | None = None) -> list[dict]:
    """One row per target modality; in each, only that modality, one route, one score scale, best first."""
    out = rows(page)
    assert {r["modality"] for r in out} == expected and len(out) == len(expected)
    for r in out:
        assert r["kind"] in ("cosine", "rrf") and ("rank fusion" if r["kind"] == "rrf" else "cosine") in r["heading"]
        assert {c["modality"] for c in r["cards"]} == {r["modality"]} and len({c["route"] for c in r["cards"]}) == 1
        assert r["cards"][0]["route"] == ("fused" if r["kind"] == "rrf" else r["cards"][0]["route"])
        scores = [float(c["score"].split()[1]) for c in r["cards"]]
        assert all(c["score"].startswith(r["kind"] + " ") for c in r["cards"]) and scores == sorted(scores, reverse=True)
        if per_row is not None:
            assert len(r["cards"]) == per_row, r["modality"]
    return out


def test_search_drop_and_more_like_this(browser, server, tmp_path):
    url, data = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_selector("#targets input[value=audio]")  # chips come from /stats
    assert "210 files" in page.locator("#stats").inner_text()
    # The route menu is the server's list (GET /routes), auto first and chosen.
    page.wait_for_function("document.querySelectorAll('#route option').length > 1")
    assert page.locator("#route option").evaluate_all("os => os.map(o => o.value)") == list(ROUTE_CHOICES)
    assert page.locator("#route").input_value() == "auto"

    # Keyboard only: the text box has focus, Enter submits; untick chips so only audio and depth come back.
    for m in ("image", "text", "thermal"):
        page.get_by_label(m, exact=True).uncheck()
    page.get_by_label("Hits (k)").fill("50")
    page.get_by_label("Search text").fill("seven")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_function("document.querySelectorAll('#results section.group').length == 2")
    check_rows(page, {"audio", "depth"})
    assert page.locator("#results audio").count() >= 1
    first_depth = page.locator("#results article[data-modality=depth] img").first
    first_depth.scroll_into_view_if_needed()
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    assert any(r["kind"] == "rrf" for r in rows(page))  # text -> depth is never paired: fused, on its own scale

    # Screenshot of the text search, with every chip ticked again, for the README.
    for m in ("image", "text", "thermal"):
        page.get_by_label(m, exact=True).check()
    page.get_by_label("Hits (k)").fill("12")
    page.get_by_label("Search text").fill("a spoken seven")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("document.querySelector('#status').textContent.includes('rows, one per modality')")
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    page.wait_for_function("[...document.querySelectorAll('#results blockquote')].every(q => q.textContent != '…')")
    both = check_rows(page, {"audio", "depth", "image", "text", "thermal"}, per_row=12)
    assert {r["kind"] for r in both} == {"cosine", "rrf"}  # the scales that were once sorted into one list
    page.screenshot(path=str(tmp_path / "text-search.png"), full_page=True)

    # Drop an audio file: choosing it in the drop zone searches by file at once.
    wav = sorted((data / "audio").glob("3_*"))[0]
    page.get_by_label("Search text").fill("")
    page.locator("#file").set_input_files(str(wav))
    page.wait_for_function(f"document.querySelector('#status').textContent.includes('hits for {wav.name}')")
    assert "audio query" in page.locator("#status").inner_text()
    check_rows(page, {"audio", "depth", "image", "text", "thermal"}, per_row=12)
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(tmp_path / "file-search.png"), full_page=True)
    if os.environ.get("EBRIDGE_WRITE_SCREENSHOT"):  # refresh the README's picture: EBRIDGE_WRITE_SCREENSHOT=1 pytest ...
        from PIL import Image

        README_SHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(README_SHOT))
        Image.open(README_SHOT).convert("RGB").quantize(colors=128).save(README_SHOT, optimize=True)

    # "More like this" on an image hit searches by its id: that item comes back first with score 1.
    for m in ("audio", "depth", "text", "thermal"):
        page.get_by_label(m, exact=True).uncheck()
    page.get_by_label("Search text").fill("three")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('hits for “three”')")
    target = page.locator("#results article[data-modality=image]").first
    target_id = target.get_attribute("data-id")
    target.get_by_role("button", name="More like this").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('hits for like ')")
    top = cards(page).first
    assert top.get_attribute("data-id") == target_id and "cosine 1.000" in top.inner_text()
    check_rows(page, {"image"})
    page.screenshot(path=str(tmp_path / "more-like-this.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_a_route_chosen_in_the_menu_is_the_route_searched(browser, server):
    url, _ = server
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#targets input[value=audio]")
    page.wait_for_function("document.querySelectorAll('#route option').length > 1")
    page.get_by_label("Route").select_option("direct")  # text -> depth would be fused under auto
    page.get_by_label("Search text").fill("seven")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('hits for “seven”')")
    assert {c["route"] for r in rows(page) for c in r["cards"]} == {"direct"}
    page.close()


def test_errors_show_in_the_page_not_as_a_crash(browser, server):
    url, _ = server
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#targets input[value=audio]")
    page.locator("#file").set_input_files({"name": "broken.png", "mimeType": "image/png", "buffer": b"not a png"})
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")
    assert page.locator("#status").inner_text() == "broken.png: unknown or corrupt image format"
    page.close()


def test_the_page_shows_a_watching_servers_progress(browser, tmp_path_factory):
    """A server started with a watched folder: the page's status line follows a file dropped into it."""
    from indexer.index import index_directory
    from indexer.watch import WatchSettings
    from query.serve.app import create_app
    from query.serve.service import SearchService, ServeSettings
    from tests.serve_support import RunningServer, small_index

    _, data = small_index(tmp_path_factory)
    root = tmp_path_factory.mktemp("watched")
    src = root / "src"
    for sub in ("image", "text"):
        (src / sub).mkdir(parents=True)
        for f in sorted((data / sub).iterdir())[:3]:
            shutil.copy(f, src / sub / f.name)
    index_directory(src, root / "idx", bridge=data.parents[1] / "bridge", progress=False)
    service = SearchService.open(root / "idx", ServeSettings(warm=False, workers=1), watch=src,
                                 watch_settings=WatchSettings(settle_s=0.3, debounce_s=0.1, quiet_s=3600))
    try:
        with RunningServer(create_app(service)) as url:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector("#indexing:not([hidden])")
            page.wait_for_function("document.querySelector('#indexing').textContent.includes(': watching')")
            shutil.copy(sorted((data / "image").iterdir())[5], src / "image" / "dropped.png")
            (src / "image" / "broken.png").write_bytes(b"not a png")
            page.wait_for_function("['1 errors', '0 queued', ': watching'].every(w => "
                                   "document.querySelector('#indexing').textContent.includes(w))", timeout=60_000)
            line = page.locator("#indexing").inner_text()
            assert "0 queued" in line and "2 done" in line and "broken.png: unknown or corrupt image format" in line
            assert "7 files" in page.locator("#stats").inner_text()
            page.close()
    finally:
        service.close()


@pytest.fixture(scope="module")
def moment_server(tmp_path_factory):
    """A server over a long recording (ESC-10 clips joined with pauses) on the offline preset."""
    from indexer.index import index_directory
    from query.serve.app import create_app
    from query.serve.service import SearchService, ServeSettings
    from tests.serve_support import RunningServer
    from tests.test_moments import long_recording

    root = tmp_path_factory.mktemp("moment-page")
    parts = long_recording(root / "src" / "walk.wav", 0, seed=0)
    index_directory(root / "src", root / "index", preset="offline", workers=1, progress=False)
    service = SearchService.open(root / "index", ServeSettings(workers=1))
    try:
        with RunningServer(create_app(service)) as url:
            yield url, parts
    finally:
        service.close()


def test_a_moment_hit_plays_from_its_start_and_shows_its_time(browser, moment_server, tmp_path):
    url, parts = moment_server
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    page.goto(url)
    page.fill("#q", "dog barking")
    page.click("#go")
    card = cards(page).first
    card.wait_for()
    start = float(card.get_attribute("data-start"))
    dog = next(p for p in parts if p[0] == "dog")
    assert dog[1] - 0.05 <= start < dog[2]  # the dog's part of the recording
    header = page.locator("#stats").inner_text()  # one file, however many moments it is cut into
    assert header.startswith("1 file (1 audio) · ") and " moments · " in header, header
    when = card.locator(".when").text_content()
    assert when.startswith("@ ") and when[2:7] == f"{int(start) // 60:02d}:{int(start) % 60:02d}"
    player = card.locator("audio")
    assert f"#t={start:g}" in player.get_attribute("src") or f"#t={start}" in player.get_attribute("src")
    page.wait_for_function("el => el.readyState >= 1", arg=player.element_handle(), timeout=20_000)
    assert abs(player.evaluate("el => el.currentTime") - start) < 0.3  # the player starts at the moment
    shot = tmp_path / "moment-hit.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("EBRIDGE_SHOTS"):  # a folder to keep the screenshot in, to look at it
        shutil.copy(shot, Path(os.environ["EBRIDGE_SHOTS"]) / shot.name)
    page.close()
