"""Is anything listening on a unix socket? (A live daemon, or a file a crash left behind.)"""

from __future__ import annotations

import socket
from pathlib import Path


def socket_accepts(path: Path) -> bool:
    """True when a server accepts connections on `path`; False for a stale or missing file."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
