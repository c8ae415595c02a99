"""Stakeholder reports: daily and weekly KPIs from the marts, rendered as HTML and PDF, e-mailed once."""
