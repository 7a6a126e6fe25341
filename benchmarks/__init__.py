"""The benchmarks: `scripts/bench/NAME` runs `python -m benchmarks.NAME` from the repository
root. Each prints a readable table and, as its very last line, one JSON object with its
figures; a timing is reported next to a reference measured in the same run. The parts they
start (servers, processes, simulated agents) come from tests/harness, as the tests' do."""
