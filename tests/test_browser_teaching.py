"""Teaching that matches a 28 px tile (issue 32), in headless Chromium at phone (390 x 844) and desktop (1366 x 900)
width: Generate's occlusion map is the tile in grey with the map in one orange, its legend and its one-line reading
under it, shown whole beside the image.

Screenshots go to ``test-artifacts/`` (gitignored) for a human look: ``teaching_map_{phone,desktop}.png``.
"""

from __future__ import annotations

import re

import pytest

from test_browser import CHROMIUM, browser  # noqa: F401  (browser: the shared fixture)
from test_browser_learning import assert_fits_the_width, new_page, overlap, shown_pixels

from pathsynth.explain import MAP_LEGEND_HEIGHT

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 900}}

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_generate_shows_the_map_over_the_tile_with_its_legend(browser, running_app, artifacts_dir, device):  # noqa: F811
    viewport = VIEWPORTS[device]
    page = new_page(browser, running_app.url, viewport)
    page.get_by_label("…or describe what you want to see").fill("immune cells")
    page.get_by_label(re.compile("Show occlusion map")).check()
    page.get_by_role("button", name="Generate verified image").click()
    shown = page.locator("#gen-cam img").first
    shown.wait_for()
    assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [336, 336 + MAP_LEGEND_HEIGHT]
    pixels = shown_pixels(page, shown)
    legend = pixels[336:]
    assert (legend < 128).any(axis=-1).sum() > 500  # the legend and the reading are drawn under the map
    red, green, blue = (pixels[:336, :, c].astype(int) for c in range(3))
    assert ((red >= green - 1) & (green >= blue - 1)).all()  # grey and orange only: no rainbow
    shown.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / f"teaching_map_{device}.png"), full_page=True)
    box, image_box = shown.bounding_box(), page.locator("#gen-image img").first.bounding_box()
    assert box["width"] >= 0.8 * image_box["width"]  # the map's tile about as large as the image beside it
    assert box["height"] >= box["width"] * (336 + MAP_LEGEND_HEIGHT) / 336 - 2  # room for all of it: not cropped
    assert not overlap(box, image_box)
    assert_fits_the_width(page, viewport, "#gen-cam img")
    page.context.close()
