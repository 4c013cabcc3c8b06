"""The HTML view: self-contained, right-to-left, entities highlighted; checked in headless Chromium."""
import json
import re
import shutil
import subprocess

import pytest

from rasd.render import render_html
from rasd.schema import Document, Entity, Relation

TEXT = "انسحبت القوات الأمريكية من قاعدة التنف.\nسلّمت <القاعدة> & غادرت"


def _doc():
    return Document("d1", TEXT, [Entity("T1", 7, 23, "FORCE", text="القوات الأمريكية", score=0.91),
                                 Entity("T2", 27, 38, "BASE", text="قاعدة التنف", score=0.8)],
                    [Relation("T1", "T2", "WITHDREW_FROM", score=0.77)])


def test_html_is_self_contained_and_escaped():
    page = render_html([_doc()])
    assert "<html lang='ar' dir='rtl'>" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched from a network
    assert "&lt;القاعدة&gt; &amp;" in page
    assert page.count('class="ent ent-') == 2
    assert "WITHDREW_FROM" in page and "0.77" in page


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (CI installs Debian's chromium)")
def test_html_renders_rtl_with_highlights_in_chromium(tmp_path):
    probe = ("<script>const m=[...document.querySelectorAll('mark.ent')];document.body.setAttribute('data-check',"
             "JSON.stringify({dir:getComputedStyle(document.body).direction,marks:m.length,"
             "labels:m.map(x=>x.dataset.label),bg:m.map(x=>getComputedStyle(x).backgroundColor),"
             "visible:m.every(x=>x.getBoundingClientRect().width>0),rels:document.querySelectorAll('tr.rel').length}))"
             "</script></body>")
    page = render_html([_doc()]).replace("</body>", probe)
    path = tmp_path / "view.html"
    path.write_text(page, encoding="utf-8")
    shot = tmp_path / "view.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    out = subprocess.run([_chromium(), *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    m = re.search(r"data-check=\"([^\"]*)\"", out.stdout)
    assert m, out.stderr[-2000:]
    check = json.loads(m.group(1).replace("&quot;", '"'))
    assert check["dir"] == "rtl"
    assert check["marks"] == 2 and check["labels"] == ["FORCE", "BASE"] and check["visible"]
    assert len(set(check["bg"])) == 2 and "rgba(0, 0, 0, 0)" not in check["bg"]
    assert check["rels"] == 1
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=900,500", path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 1000
