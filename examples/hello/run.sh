#!/usr/bin/env bash
set -euo pipefail
if command -v nvidia-smi >/dev/null 2>&1; then
  profile="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
else
  profile="cpu"
fi
echo "hello from c3 on ${profile}"
echo "hello from c3 on ${profile} at $(date -u +%FT%TZ)" > "$C3_ARTIFACTS_DIR/hello.txt"
