"""The report of an analysis: report.md, summary.json, the figures, the progress line."""
