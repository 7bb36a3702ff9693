"""Test-only crash points: `EBRIDGE_TEST_KILL_AT=<stage>` makes the indexer SIGKILL itself there.

"Nothing lost on a crash" is a claim about every moment of a run; a test can only check the
moments it can hit. These hooks let a test hit each stage of `index_directory` deterministically
(a real SIGKILL: no `finally`, no flush, no atexit), then re-run and check the index:

    lock       after the index lock is taken, before anything else
    bridge     after the bridge copy is written, before the store exists
    store      after the store is created, before any point is written
    batch      after the first batch is durable (points flushed, journal written)
    moments    a batch with a long file's moments flushed, its journal line not yet written
    pipeline   after the last batch, before orphans are swept and the HNSW graph is built
    optimize   as the HNSW graph build starts (with EBRIDGE_TEST_KILL_DELAY=<seconds>, a watchdog
               process kills us that long into the build instead, since it runs in native code)
    compact    in the middle of manifest compaction (new Parquet written, not yet renamed)

and, for the per-modality store (`indexer.store.partitioned`), inside the first write of a modality
that has no partition yet, and in the graph build of one partition:

    partition-folder           a new partition's shard (server: collection) made, its collection.json
                               (server: payload indexes) not yet
    partition-collection       the new partition complete (collection written), no point in it, not
                               yet in place (embedded: still in its `.<name>.tmp` folder)
    partition-manifest-before  the partition in place, the store's manifest not yet listing it
    partition-manifest-after   the manifest lists it, no point written to it yet
    partition-optimize         one partition's graph built, the next one's build started (with
                               EBRIDGE_TEST_KILL_DELAY, a watchdog kills us that long into it)

and where a partition is rebuilt with a vector it lacks (a bridge with G extending a zero-training
index: `PartitionedEdgeStore._grow_part`):

    partition-grow             the new partition whole in its `.<name>.tmp` folder, the old one in place
    partition-swap             the old partition moved aside (`.<name>.old`), the new one not yet in place

Unset (always, outside tests), each hook is one dictionary lookup.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)

KILL_ENV = "EBRIDGE_TEST_KILL_AT"
DELAY_ENV = "EBRIDGE_TEST_KILL_DELAY"
STAGES = ("lock", "bridge", "store", "batch", "moments", "pipeline", "optimize", "compact", "partition-folder",
          "partition-collection", "partition-manifest-before", "partition-manifest-after", "partition-optimize",
          "partition-grow", "partition-swap")
_NATIVE = ("optimize", "partition-optimize")  # stages that run into native code: a watchdog can land inside


def crash_point(stage: str) -> None:
    """SIGKILL this process now if the test asked for a crash at `stage`."""
    if os.environ.get(KILL_ENV) != stage:
        return
    log.warning("%s=%s: killing this process (test crash point)", KILL_ENV, stage)
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    if stage in _NATIVE and delay > 0:
        # The graph is built in native code that holds the GIL: only another process can
        # interrupt it mid-way.
        subprocess.Popen(["/bin/sh", "-c", f"sleep {delay}; kill -9 {os.getpid()}"], start_new_session=True)
        return
    os.kill(os.getpid(), signal.SIGKILL)
