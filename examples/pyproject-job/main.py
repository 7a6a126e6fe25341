"""Prints a small table with `tabulate` (a third-party package from the job's env)."""

import os
import sys

from tabulate import tabulate

rows = [
    ["python", sys.version.split()[0]],
    ["venv", os.environ.get("VIRTUAL_ENV", "-")],
    ["workdir", os.environ.get("C3_JOB_WORKDIR", "-")],
]
print(tabulate(rows, headers=["what", "value"], tablefmt="github"))
artifacts = os.environ.get("C3_ARTIFACTS_DIR")
if artifacts:
    with open(os.path.join(artifacts, "table.md"), "w") as f:
        f.write(tabulate(rows, headers=["what", "value"], tablefmt="github") + "\n")
