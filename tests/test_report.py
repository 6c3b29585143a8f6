"""The HTML QC report: self-contained, worst first, flags visible, pictures of the predicted errors."""
import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from test_evaluate import FLAG_BELOW, PREDICTED, make_prediction_output

from nnqc.evaluation.evaluate import evaluate_predictions
from nnqc.evaluation.plots import ERROR_ALPHA, ERROR_COLOUR
from nnqc.evaluation.previews import most_erroneous_slice
from nnqc.evaluation.report import write_report

CHROMIUM = "/usr/bin/chromium"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def shuffled_output(tmp_path) -> dict:
    """A prediction folder whose summary rows are out of order, with a skipped case whose reason holds markup."""
    folders = make_prediction_output(tmp_path)
    path = os.path.join(folders["out"], "qc_summary.csv")
    table = pd.read_csv(path)
    extra = pd.DataFrame([{"case": "odd&case", "status": "skipped: <script>alert(1)</script> unreadable"}])
    pd.concat([table, extra]).sample(frac=1, random_state=3).to_csv(path, index=False)
    return folders


def png_width(png: bytes) -> int:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big")


def case_pictures(page: str) -> dict:
    """case -> decoded PNG of its card."""
    pictures = {}
    for card in re.findall(r"<div class='card[^']*' id='case-\d+'><h3>\d+\. (.*?) <span.*?</div>\s*(.*?)</div>",
                           page, flags=re.S):
        name, body = card
        match = DATA_URI.search(body)
        if match:
            pictures[name] = base64.b64decode(match.group(1))
    return pictures


def test_report_is_self_contained_worst_first_and_flags_visible(tmp_path):
    folders = shuffled_output(tmp_path)
    path = write_report(folders["out"])
    assert path == os.path.join(folders["out"], "qc_report.html")
    with open(path, encoding="utf-8") as f:
        page = f.read()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(DATA_URI.findall(page)) == len(PREDICTED)  # one picture per assessed case, no scatter plots yet

    ranked = re.findall(r"<a href='#case-\d+'>(.*?)</a>", page)
    assert ranked == sorted(PREDICTED, key=lambda c: PREDICTED[c][0])
    flagged_rows = re.findall(r"<tr class='flagged'><td>\d+</td><td class='case'><a href='#case-\d+'>(.*?)</a>", page)
    expected_flagged = {c for c, (dsc, _) in PREDICTED.items() if dsc < FLAG_BELOW}
    assert set(flagged_rows) == expected_flagged and len(expected_flagged) == 3
    assert page.count("badge flag") == 2 * len(expected_flagged)  # table row and card
    assert f"<b>{len(PREDICTED)}</b>case(s) assessed" in page and "<b>3</b>flagged" in page
    assert "<b>2</b>skipped" in page and "<b>0.70</b>flag threshold" in page
    # skipped cases with their reasons, escaped
    assert "missing channel file(s) broken_0001.nii.gz" in page
    assert "odd&amp;case" in page and "&lt;script&gt;alert(1)&lt;/script&gt; unreadable" in page
    assert "0.600 ± 0.010" in page  # predicted DSC ± sd of missing_b

    pictures = case_pictures(page)
    assert set(pictures) == set(PREDICTED)
    assert all(png_width(png) <= 400 for png in pictures.values())


def red_pixels(png: bytes) -> int:
    rgb = imread(io.BytesIO(png))[..., :3]
    overlay = np.asarray(ERROR_COLOUR) * ERROR_ALPHA
    # the overlay blends grey g into (1 - a) g + a red: red channel well above green and blue
    return int(np.count_nonzero((rgb[..., 0] - rgb[..., 1] > overlay[0] * 0.6) & (np.abs(rgb[..., 1] - rgb[..., 2])
                                                                                   < 0.05)))


def test_pictures_show_the_predicted_errors(tmp_path):
    folders = make_prediction_output(tmp_path)
    with open(write_report(folders["out"]), encoding="utf-8") as f:
        pictures = case_pictures(f.read())
    legend_only = red_pixels(pictures["perfect2"])  # no predicted error: only the legend's patch is red
    assert red_pixels(pictures["swapped"]) > legend_only + 5000  # 16 of 168 slice pixels, drawn 400 px wide
    assert red_pixels(pictures["missing_b"]) > legend_only + 5000


def test_slice_with_most_predicted_error():
    segmentation = np.zeros((6, 4, 4), dtype=np.uint8)
    segmentation[1, :2] = 1
    errors = np.zeros((6, 4, 4), dtype=bool)
    errors[4, 0, :3] = True
    errors[2, 0, :2] = True
    assert most_erroneous_slice(errors, segmentation) == 4
    assert most_erroneous_slice(np.zeros_like(errors), segmentation) == 1
    assert most_erroneous_slice(None, segmentation) == 1
    assert most_erroneous_slice(None, np.zeros_like(segmentation)) == 3


def test_missing_images_and_preview_limit(tmp_path):
    folders = make_prediction_output(tmp_path)
    with open(write_report(folders["out"], max_previews=2), encoding="utf-8") as f:
        page = f.read()
    assert len(DATA_URI.findall(page)) == 2
    assert page.count("only the 2 worst cases get one") == len(PREDICTED) - 2
    shutil.rmtree(folders["images"])
    with open(write_report(folders["out"]), encoding="utf-8") as f:
        page = f.read()
    assert len(DATA_URI.findall(page)) == 0 and page.count("No picture:") == len(PREDICTED)


def test_evaluation_refreshes_the_report(tmp_path):
    folders = make_prediction_output(tmp_path)
    write_report(folders["out"])
    evaluate_predictions(folders["out"], folders["refs"], verbose=False)
    with open(os.path.join(folders["out"], "qc_report.html"), encoding="utf-8") as f:
        page = f.read()
    assert "Predicted against true quality" in page and "<th>true DSC</th>" in page
    assert len(DATA_URI.findall(page)) == len(PREDICTED) + 3  # previews, two scatter plots, risk-coverage
    for name in ("scatter_dsc.png", "scatter_nsd.png"):
        with open(os.path.join(folders["out"], name), "rb") as f:
            assert base64.b64encode(f.read()).decode() in page


def mark_partial_view(folders: dict, case: str, outside: float) -> None:
    path = os.path.join(folders["out"], "qc_summary.csv")
    table = pd.read_csv(path)
    table["partial_view"] = table["case"] == case
    table["foreground_outside_view"] = np.where(table["case"] == case, outside, 0.0)
    table.to_csv(path, index=False)


def test_partial_view_cases_are_marked(tmp_path):
    folders = make_prediction_output(tmp_path)
    mark_partial_view(folders, "shifted", 0.125)
    with open(write_report(folders["out"]), encoding="utf-8") as f:
        page = f.read()
    assert page.count("PARTIAL VIEW") == 2  # in the table and on the card of that one case
    assert "12.5 % of the segmentation's foreground" in page
    card = page[page.index("shifted <span"):]
    assert card.index("PARTIAL VIEW") < card.index("</div>")
    assert "<b>1</b>partial view" in page


def colour_present(pixels: np.ndarray, hex_colour: str, min_pixels: int = 20) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    as_bytes = np.round(pixels[..., :3] * 255).astype(int)
    return int(np.all(np.abs(as_bytes - rgb) <= 2, axis=-1).sum()) >= min_pixels


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_renders_in_headless_chromium(tmp_path):
    folders = make_prediction_output(tmp_path)
    mark_partial_view(folders, "shifted", 0.125)
    evaluate_predictions(folders["out"], folders["refs"], verbose=False)
    report = write_report(folders["out"])
    profile, shot = tmp_path / "profile", tmp_path / "shot.png"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--window-size=1200,1600", f"file://{report}"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert shot.is_file()
    pixels = imread(str(shot))
    assert pixels.shape[1] == 1200
    # the page itself, not Chromium's error page: the badges' known colours (FLAGGED, ok, PARTIAL VIEW) and the
    # flagged rows' background are on screen
    for colour in ("#c62828", "#e3f1e4", "#ef6c00", "#fdecea"):
        assert colour_present(pixels, colour), colour
