"""A simulated device for the fleet-update tests, in its own process: a log store, a sync client,
an updater and an app model that hot-swaps. Each round: poll for an update, predict 20 digits
(users label every prediction), ship the log. Prints one JSON line per round.

    python _device.py COLLECTOR_URL TOKEN FOLDER FIRST_BUNDLE DATA.npz ROUNDS [PUBLIC_KEY [MAX_RATE_BPS]]
"""

import json
import sys
import zlib
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.hot import HotModel
from edgekit.sync import SyncClient
from edgekit.sync.store import LogStore, SamplingPolicy
from edgekit.sync.updates import Updater


def main(url, token, folder, first, data, rounds, public_key=None, max_rate=None):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    store = LogStore(folder / "log.db", sampling=SamplingPolicy.parse("none"))
    updater = Updater(url, token, "digits-cnn", folder / "updates", public_key=public_key,
                      max_rate_bps=float(max_rate) if max_rate else None)
    app = HotModel(updater.current_bundle() or first, log_store=store, public_key=public_key)
    updater.on_swap, updater.on_shadow = app.swap, app.set_shadow
    client = SyncClient(store, url, token)
    with np.load(data) as f:
        x, y = f["input"], f["labels"]
    rng = np.random.default_rng(zlib.crc32(str(folder).encode()))
    for r in range(int(rounds)):
        try:
            event = updater.poll_once()
        except EdgekitError as exc:
            event = {"event": "error", "reason": str(exc)}
        for i in rng.choice(len(x), 20):
            out = app.predict({"input": x[i:i + 1]})
            app.feedback(out.request_id, label=int(y[i]))
        app.flush_shadow()
        client.drain()
        print(json.dumps({"round": r, **event, "running": app.version, "shadow": app.shadow_version,
                          "fetched": updater.fetched}), flush=True)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
