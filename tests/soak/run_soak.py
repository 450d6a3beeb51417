"""Long forms of the chaos soak and the crash loop, outside pytest.

    .venv/bin/python tests/soak/run_soak.py soak --turns 10000 [--sessions 4] [--seed N] [--form F]
    .venv/bin/python tests/soak/run_soak.py crash --kills 100 [--sessions 3] [--seed N]
    .venv/bin/python tests/soak/run_soak.py soak --turns 200 --break no-replay   # must FAIL

Exit status 0 when no violation was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    from soak_client import FORMS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["soak", "crash"])
    p.add_argument("--turns", type=int, default=1000)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--sessions", type=int)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--break", dest="break_mode", choices=["no-replay", "reuse-stale-handle"])
    p.add_argument("--form", default="3.8-text", choices=list(FORMS),
                   help="the catalogue entry the soak runs against (soak_client.FORMS)")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    if args.what == "soak":
        from soak_lib import SoakParams, run_soak

        params = SoakParams(turns=args.turns, sessions=args.sessions or 4, seed=seed,
                            break_mode=args.break_mode, time_limit=3600, form=args.form)
        result = trio.run(run_soak, params)
    else:
        from crash_lib import CrashParams, run_crash_loop

        params = CrashParams(kills=args.kills, sessions=args.sessions or 3, seed=seed,
                             break_mode=args.break_mode, time_limit=3600)
        result = trio.run(run_crash_loop, params)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
