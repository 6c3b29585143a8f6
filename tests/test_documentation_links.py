"""The documentation holds together: README.md and every page under documentation/.

Every relative link and image points to a file that exists (relative to the page that links it), every `#anchor`
names a heading of its target page by GitHub's slug rule, no page under documentation/ is unreachable from the
README, and the README stays a short front door (at most 250 lines). Links to web sites (http, https, mailto) are
not followed.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lowercased, without punctuation other than hyphens
    and underscores, each space a hyphen. Backticks and em-dashes are removed like any other punctuation, so
    "`nnQC_convert` — build a QC dataset" gives "nnqc_convert--build-a-qc-dataset"."""
    text = re.sub(r"^#{1,6}\s+", "", heading.strip())
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("*", "").replace("`", "")  # emphasis and code markers
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: letters, digits and underscore, in any script
    return text.replace(" ", "-")


def _lines_outside_code_blocks(text: str) -> list[str]:
    lines, fence = [], None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            continue
        lines.append(line)
    return lines


def headings(text: str) -> list[str]:
    """The headings of a markdown text, in order, outside fenced code blocks."""
    return [m.group(2) for line in _lines_outside_code_blocks(text) if (m := _HEADING.match(line))]


def anchors(text: str) -> set[str]:
    """Every anchor of a page: its headings' slugs, repeated ones numbered as GitHub numbers them (-1, -2, ...),
    and explicit <a name=...> / id=... anchors."""
    seen: Counter[str] = Counter()
    result = set()
    for heading in headings(text):
        slug = github_slug(heading)
        result.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    result.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return result


def links(text: str) -> list[str]:
    """The targets of every link, image and reference definition outside code blocks and inline code."""
    targets = []
    for line in _lines_outside_code_blocks(text):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
            continue
        line = _INLINE_CODE.sub(lambda m: "code", line)
        targets.extend(m.group(1) for m in _LINK.finditer(line))
    return targets


def markdown_files(root: Path) -> list[Path]:
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + sorted((root / "documentation").rglob("*.md"))


def _resolve(page: Path, target: str) -> tuple[Path, str]:
    path, _, fragment = target.partition("#")
    return (page if not path else (page.parent / unquote(path)).resolve()), unquote(fragment)


def link_problems(root: Path) -> list[str]:
    """One line per broken link: a missing file, a missing heading, or an absolute path."""
    problems = []
    for page in markdown_files(root):
        name = page.relative_to(root).as_posix()
        for target in links(page.read_text(encoding="utf-8")):
            if _EXTERNAL.match(target):
                continue
            if not target:
                problems.append(f"{name}: empty link target")
                continue
            if target.startswith("/"):
                problems.append(f"{name}: absolute link {target!r}")
                continue
            path, fragment = _resolve(page, target)
            if not path.exists():
                shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else path
                problems.append(f"{name}: {target!r}: no file {shown}")
            elif fragment:
                if path.suffix != ".md":
                    problems.append(f"{name}: {target!r}: an anchor into a file that is not markdown")
                elif fragment not in anchors(path.read_text(encoding="utf-8")):
                    problems.append(f"{name}: {target!r}: no heading with the anchor #{fragment} in "
                                    f"{path.relative_to(root).as_posix()}")
    return problems


def unreachable_pages(root: Path) -> list[str]:
    """The pages under documentation/ that no chain of links from README.md reaches."""
    start = (root / "README.md").resolve()
    reached, todo = {start}, [start]
    while todo:
        page = todo.pop()
        for target in links(page.read_text(encoding="utf-8")):
            if _EXTERNAL.match(target) or not target or target.startswith("/"):
                continue
            path, _ = _resolve(page, target)
            if path.suffix == ".md" and path.is_file() and path not in reached:
                reached.add(path)
                todo.append(path)
    return [p.relative_to(root).as_posix() for p in markdown_files(root) if p.resolve() not in reached]


@pytest.mark.parametrize("heading, slug", [
    ("### `nnQC_convert` — build a QC dataset", "nnqc_convert--build-a-qc-dataset"),
    ("# nnQC — self-configuring segmentation quality control on nnU-Net v2",
     "nnqc--self-configuring-segmentation-quality-control-on-nnu-net-v2"),
    ("## Calibration data: `calibration.json` in the model folder",
     "calibration-data-calibrationjson-in-the-model-folder"),
    ("## Failure-detection metrics (`nnQC_evaluate`)", "failure-detection-metrics-nnqc_evaluate"),
    ("## bf16 prediction on the CPU: what stays fp32", "bf16-prediction-on-the-cpu-what-stays-fp32"),
    ("## **Bold** and [a link](other.md)", "bold-and-a-link"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_anchors_number_repeated_headings_and_skip_code_blocks():
    text = "# Title\n\n## Usage\n\n```bash\n# not a heading\n```\n\n## Usage\n"
    assert anchors(text) == {"title", "usage", "usage-1"}


def test_links_skip_code():
    text = ("[a](a.md) `[b](b.md)` ![c](img/c.png)\n```\n[d](d.md)\n```\n"
            "[`e`](e.md#x) [f](https://example.org)\n[g]: g.md\n")
    assert links(text) == ["a.md", "img/c.png", "e.md#x", "https://example.org", "g.md"]


def test_the_checks_find_broken_links_and_orphans(tmp_path):
    (tmp_path / "documentation" / "how_to").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# Readme\n\n[start](documentation/start.md)\n"
                                        "[gone](documentation/gone.md) [self](#readme) [bad](#nothing)\n"
                                        "![picture](documentation/assets/none.png) [root](/etc/passwd)\n")
    (tmp_path / "documentation" / "start.md").write_text(
        "# Start\n\n## `nnQC_train` — one fold\n\n[up](../README.md#readme) [cmd](#nnqc_train--one-fold)\n"
        "[wrong](../README.md#start)\n")
    (tmp_path / "documentation" / "how_to" / "orphan.md").write_text("# Orphan\n\n[start](../start.md)\n")
    problems = link_problems(tmp_path)
    assert len(problems) == 5, problems
    assert any("gone.md" in p for p in problems)
    assert any("#nothing" in p for p in problems)
    assert any("none.png" in p for p in problems)
    assert any("absolute link" in p for p in problems)
    assert any("#start" in p and "README.md" in p for p in problems)
    assert unreachable_pages(tmp_path) == ["documentation/how_to/orphan.md"]


def test_documentation_links_resolve():
    problems = link_problems(ROOT)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_no_documentation_page_is_orphaned():
    assert (ROOT / "documentation").is_dir()
    orphans = unreachable_pages(ROOT)
    assert not orphans, f"pages no link from README.md leads to: {orphans}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"
