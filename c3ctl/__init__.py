"""c3ctl (alias c3), the command line."""

import time as _time

# When the user ran the command (before any import of c3ctl's own): the timing line of a
# run it follows counts from here.
STARTED_AT = _time.time()
