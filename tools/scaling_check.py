"""A job on a simulated 4-node Ray cluster (``ray.cluster_utils.Cluster``, every node on this machine) into a
real S3 server on 127.0.0.1 (moto): the per-video units spread over the nodes, and the rows equal those of a
one-node run into a local folder. Run by hand (it takes minutes on 2 cores; CI runs the 2-node tests):

    python tools/scaling_check.py [CLIP ...]      # default: the shared clips

Prints where each video was finished and how the rows compare; exits 1 when the units did not spread over
at least two nodes or the rows differ beyond float rounding.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import run_batch  # noqa: E402
from tests.s3 import S3Server, environment  # noqa: E402

NODES, CPUS_PER_NODE, BUCKET = 4, 1, "bucket"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def rows(filesystem: pafs.FileSystem, root: str, table: str):
    frame = ds.dataset(f"{root}/{table}", filesystem=filesystem, partitioning="hive").to_table().to_pandas()
    keys = {"faces": ["video_id", "frame_index", "face_index"], "frames": ["video_id", "frame_index"]}.get(
        table, ["video_id", "track_id"])
    return frame.sort_values(keys).reset_index(drop=True)


def main() -> int:
    clips = sys.argv[1:] or sorted(str(p) for p in SHARED.glob("*.m*"))
    server = S3Server()
    store = server.filesystem()
    store.create_dir(BUCKET)
    try:
        with environment(server.env()):
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": CPUS_PER_NODE})
            for _ in range(NODES - 1):
                cluster.add_node(num_cpus=CPUS_PER_NODE)
            ray.init(address=cluster.address)
            outcomes = run_batch(clips, f"s3://{BUCKET}/scaling", annotate=False)
            ray.shutdown()
            cluster.shutdown()
            local = Path(tempfile.mkdtemp(prefix="scaling-one-node-"))
            run_batch(clips, str(local), annotate=False)
            ray.shutdown()
        failed = [o for o in outcomes if o.status != "complete"]
        nodes = {}
        for outcome in outcomes:
            with store.open_input_stream(f"{BUCKET}/scaling/manifest/{outcome.video_id}.json") as handle:
                nodes[Path(outcome.path).name] = json.loads(handle.read())["unit_node"]
        print(f"{NODES} nodes of {CPUS_PER_NODE} CPU; videos finished on {len(set(nodes.values()))} distinct nodes:")
        for name, node in nodes.items():
            print(f"  {name}: {node[:12]}")
        worst = 0.0
        for table in ("faces", "frames", "tracks", "episodes"):
            got, want = rows(store, f"{BUCKET}/scaling", table), rows(pafs.LocalFileSystem(), str(local), table)
            assert len(got) == len(want) and list(got.columns) == list(want.columns), table
            numeric = [c for c in want.columns if want[c].dtype.kind in "fi"]
            difference = float(np.abs(got[numeric].to_numpy(float) - want[numeric].to_numpy(float)).max()) if len(got) else 0.0
            worst = max(worst, difference)
            print(f"  {table}: {len(got)} rows on 4 nodes, {len(want)} on one; largest difference {difference:.2g}")
        ok = not failed and len(set(nodes.values())) >= 2 and worst < 1e-3
        print("OK" if ok else f"FAILED: {failed or 'units on one node' if len(set(nodes.values())) < 2 else worst}")
        return 0 if ok else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
