"""The test table says how to read its numbers: the ECE's direction, OOD's positive side, HD95's unit; predict
names the temperature column only where the file has one."""

from mmix_applied.engine.summary import format_prediction_line, format_test_table


def _row(table, name):
    return next(line for line in table.splitlines() if line.startswith(f"{name} "))


def test_ece_rows_say_over_or_underconfident_raw_and_scaled():
    table = format_test_table({"test/ece": 0.08, "test/ece_scaled": 0.02, "test/conf_gap": -0.07,
                               "test/conf_gap_scaled": 0.01, "test/adaptive_ece": 0.09, "test/acc": 0.9,
                               "temperature": 0.6})
    assert table.splitlines()[0].split() == ["metric", "raw", "scaled", "note"]
    assert _row(table, "test/ece").endswith("direction: underconfident, overconfident (scaled)")
    assert _row(table, "test/adaptive_ece").endswith("direction: underconfident, overconfident (scaled)")
    assert "mean confidence - accuracy: > 0 overconfident, < 0 underconfident" in _row(table, "test/conf_gap")
    assert _row(table, "test/acc").split() == ["test/acc", "0.9"]  # no note where none is needed


def test_ood_rows_say_in_distribution_is_positive_and_hd95_says_its_unit():
    table = format_test_table({"test/ood_fpr95": 0.4, "test/ood_auroc": 0.8, "test/hd95_gm": 2.5,
                               "test/mean_hd95": 2.5, "hd95_unit": "mm"})
    assert "threshold keeping 95 % of in-distribution (positive)" in _row(table, "test/ood_fpr95")
    assert "in-distribution = positive" in _row(table, "test/ood_auroc")
    assert _row(table, "test/hd95_gm").endswith("in mm") and _row(table, "test/mean_hd95").endswith("in mm")
    assert "hd95_unit" not in table.split("temperature:")[0].split()  # a text key is no row
    assert table.splitlines()[-1] == "temperature: none (raw figures only)"


def test_prediction_line_names_the_temperature_column_only_where_there_is_one(tmp_path):
    classification = tmp_path / "p.csv"
    classification.write_text("id,target,predicted,confidence,p_a,p_b,temperature\nx,a,a,0.7,0.7,0.3,0.6\n")
    segmentation = tmp_path / "s.csv"
    segmentation.write_text("name,mask\nz001,s/z001.png\n")
    handwriting = tmp_path / "h.csv"
    handwriting.write_text("id,prediction\nl1,hello\n")
    assert format_prediction_line(classification, raw=False).endswith(
        "(calibrated where the checkpoint has a temperature; see its temperature column)")
    assert "(raw; see its temperature column)" in format_prediction_line(classification, raw=True)
    for path in (segmentation, handwriting):
        assert format_prediction_line(path, raw=False) == f"predictions: {path}"
