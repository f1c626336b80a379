"""report.html is one self-contained page: tables rendered, pictures inlined as SVG."""

from __future__ import annotations

from nas_mtl.plots.figures import new_figure, save_figure
from nas_mtl.report_html import report_html


def test_pictures_are_inlined_as_svg_and_tables_rendered(tmp_path):
    fig = new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "runs" / "curve")
    text = (
        "# r\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![the curve](runs/curve.png)\n\n"
        "![missing picture](runs/none.png)\n"
    )
    page = report_html(text, tmp_path, "r")
    assert page.startswith("<!DOCTYPE html>") and "<td>2</td>" in page
    assert page.count("<svg") == 1 and "<figcaption>the curve</figcaption>" in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert 'src="runs/none.png"' in page  # no SVG beside it: the link stays
    assert 'src="runs/curve.png"' not in page
