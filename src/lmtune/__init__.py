"""lmtune: fine-tune language models end to end, offline-first."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (imported by peft) logs at import time that an optional hub kernel is missing; lmtune
# never downloads kernels, so the line is noise on every command
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
