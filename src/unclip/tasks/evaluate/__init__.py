"""Evaluations: each returns a nested dict of figures; `report.print_report` shows them."""
