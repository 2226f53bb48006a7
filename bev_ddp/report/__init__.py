"""Evaluation reports (console, JSON, CSV, markdown, PNG) shared by the BEV, seg and depth tasks."""
from bev_ddp.report.writer import report_from_json, write_report

__all__ = ["write_report", "report_from_json"]
