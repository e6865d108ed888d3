"""Page 2: the bundled sample in one click, preview, guessed and changed columns, validation, drops, errors."""

from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDropEvent

from jrft_desktop.core.config import DataSpec, field_help
from jrft_desktop.gui import dialogs
from jrft_desktop.gui.backend import PREVIEW_ROWS


def wait_summary(qtbot, page):
    qtbot.waitUntil(lambda: not page.busy and (page.summary is not None or bool(page.error)), timeout=30_000)


def test_bundled_sample_in_one_click(qtbot, window):
    page = window.data_page
    page.sample_button.click()
    wait_summary(qtbot, page)
    assert page.train_edit.text().endswith("sst2_train.tsv")
    assert page.file_radio.isChecked() and page.validation_edit.text().endswith("sst2_dev.tsv")
    assert page.preview_view.model().rowCount() == PREVIEW_ROWS
    assert page.preview.columns == ("sentence", "label")
    assert (page.text_combo.currentText(), page.pair_combo.currentIndex(), page.label_combo.currentText()) == \
        ("sentence", 0, "label")
    summary = page.summary
    assert (summary.train_rows, summary.validation_rows, summary.num_labels) == (4000, 872, 2)
    assert sum(summary.train_counts.values()) == 4000
    assert page.distribution.rowCount() == 2
    assert page.distribution.item(0, 0).text() == "0"
    assert "872" in page.summary_label.text()
    assert page.train_edit.toolTip() == field_help(DataSpec, "train")


def test_split_fraction_and_row_limit(qtbot, window, sst2_200):
    page = window.data_page
    page.set_train(str(sst2_200))
    wait_summary(qtbot, page)
    assert page.split_radio.isChecked()
    assert (page.summary.train_rows, page.summary.validation_rows) == (180, 20)
    page.fraction_spin.setValue(25)
    page.rows_spin.setValue(100)
    wait_summary(qtbot, page)
    # the row limit reads 134 rows (100 and the 25 % split's share), and the split is a quarter of them
    assert (page.summary.train_rows, page.summary.validation_rows) == (100, 33)
    page.validation_rows_spin.setValue(30)
    wait_summary(qtbot, page)
    assert (page.summary.train_rows, page.summary.validation_rows) == (100, 30)
    assert page.data_spec().validation_fraction == 0.25 and page.data_spec().max_train_rows == 100
    assert page.data_spec().max_validation_rows == 30


def test_columns_can_be_changed_and_pairs_are_guessed(qtbot, window, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("premise,hypothesis,verdict,note\n" + "".join(
        f"a cat sat {i},a cat is sitting {i},{'yes' if i % 2 else 'no'},n{i}\n" for i in range(40)), encoding="utf-8")
    page = window.data_page
    page.set_train(str(pairs))
    wait_summary(qtbot, page)
    assert (page.text_combo.currentText(), page.pair_combo.currentText()) == ("premise", "hypothesis")
    page.label_combo.setCurrentText("verdict")
    wait_summary(qtbot, page)
    assert page.summary.label_names == ("no", "yes")
    assert page.data_spec().label_column == "verdict" and page.data_spec().text_pair_column == "hypothesis"


def test_drop_a_file_and_browse(qtbot, window, sst2_200, monkeypatch):
    page = window.data_page
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(sst2_200))])
    page.dropEvent(QDropEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                              Qt.KeyboardModifier.NoModifier))
    wait_summary(qtbot, page)
    assert page.train_edit.text() == str(sst2_200) and page.summary.train_rows == 180
    monkeypatch.setattr(dialogs, "choose_open_file", lambda *args: str(sst2_200))
    page.browse_validation_button.click()
    wait_summary(qtbot, page)
    assert page.file_radio.isChecked() and page.summary.validation_rows == 200


def test_bad_files_are_explained_on_the_page(qtbot, window, tmp_path):
    page = window.data_page
    bad = tmp_path / "notes.docx"
    bad.write_text("hello", encoding="utf-8")
    page.set_train(str(bad))
    wait_summary(qtbot, page)
    assert page.status.kind == "error" and "unsupported file type" in page.status.text()
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"row {i},same\n" for i in range(20)), encoding="utf-8")
    page.set_train(str(one_class))
    wait_summary(qtbot, page)
    assert "at least two classes" in page.error
    window.show_page(window.train_page)
    assert "at least two classes" in window.train_page.plan_label.text()
