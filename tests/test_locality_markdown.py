"""The locality artifact's table: each ratio in the row it describes."""

import re

from proximate.locality_report import LocalityReport, budget_markdown


def test_each_row_of_the_budget_table_carries_its_own_ratio_to_the_minimum():
    report = LocalityReport(bytes_between={("a", "client"): 1_010, ("b", "a"): 1_010, ("a", "a"): 10**9})
    markdown = budget_markdown(report, minimum=2_000, centralised=1_000_000)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in markdown.splitlines()
            if line.startswith("| ") and "cross-region" not in line}  # fmt: skip
    assert rows["this run (measured, worker transfer logs)"][1] == "1.01x"  # 2,020 / 2,000
    assert rows["physical minimum"][1] == "1.00x"
    assert rows["centralised (client region reads every input)"][1] == "500.00x"
    assert re.search(r"would move 495x the bytes this run moved", markdown)  # 1,000,000 / 2,020
