"""The names of the files in an nnQC_predict output folder, which nnQC_predict, nnQC_evaluate and the report
write and read: one place, so that prediction need not import the report to know what evaluation writes."""
from __future__ import annotations

# nnQC_predict
SUMMARY_CSV, SUMMARY_JSON, SETTINGS_JSON = "qc_summary.csv", "qc_summary.json", "predict_settings.json"
CASE_RESULTS_FOLDER = "qc_cases"  # one CASE.json per case
ERRORS_LOG = "qc_errors.log"  # tracebacks of the cases that failed unexpectedly
# nnQC_evaluate and the report
EVALUATION_CSV = "qc_evaluation.csv"
EVALUATION_JSON = "qc_evaluation.json"
SCATTER_PNGS = {"DSC": "scatter_dsc.png", "NSD": "scatter_nsd.png"}
RISK_COVERAGE_PNG = "risk_coverage.png"
REPORT_HTML = "qc_report.html"
# the outputs of nnQC_evaluate and the report describe one set of predictions: a run that changes it removes them
EVALUATION_OUTPUTS = (EVALUATION_CSV, EVALUATION_JSON, *SCATTER_PNGS.values(), RISK_COVERAGE_PNG, REPORT_HTML)
