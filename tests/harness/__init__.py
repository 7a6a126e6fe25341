"""What tests and benchmarks share: real parts started for real, and the waits around them.

- `waiting`: `eventually` (and its blocking twin) — a condition polled with a deadline.
- `coordinator`: an in-process coordinator, simulated agents on real gRPC streams, and
  `Stack` — the coordinator with a channel and key, optionally storaged and a real agent.
- `storage`: an in-process storaged, test files and trees.
- `processes`: c3's servers as real child processes (ready files, deadlines, stop).
- `cli`: the real CLI and the real local stack (`c3 up`) in a private C3_HOME.
- `screen`: a real terminal (tmux) to run the CLI in and read back.
- `sandbox`: the job sandbox this host allows, chosen as the agent chooses it.
- `git`: git isolated from this machine's configuration.
- `rpc`: the status code of a gRPC call expected to fail.
Fixtures built on these live in tests/conftest.py.
"""
