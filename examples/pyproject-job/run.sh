#!/usr/bin/env bash
set -euo pipefail
python main.py
