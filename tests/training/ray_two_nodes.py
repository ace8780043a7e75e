"""Two live Ray nodes on 127.0.0.1 for node-failure tests: ``python ray_two_nodes.py HEAD_DIR WORKER_DIR``.

Ray's own test helper (``ray.cluster_utils.Cluster``, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0;
../shared/research/ray-optuna.md §5): a head and a worker node of 1 CPU each, whose runs train in
HEAD_DIR and WORKER_DIR (``LFGEN_RAY_WORKDIR`` of each node's raylet, so of its Ray workers). It runs in a
process of its own, so the test process's Ray state (auth mode and token read once, a driver left
connected by an earlier test) cannot meet it. It prints one JSON line (address, head and worker node
ids), then reads commands on stdin: ``kill-worker`` kills the worker node (its raylet and workers get
SIGKILL: a node death) and answers ``killed``; end of input shuts every node down.
"""

from __future__ import annotations

import json
import os
import sys


def main(head_dir: str, worker_dir: str) -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback: without it Ray rewrites 127.0.0.1
    from ray.cluster_utils import Cluster

    common = {"num_cpus": 1, "num_gpus": 0, "node_ip_address": "127.0.0.1"}
    nodes = Cluster(shutdown_at_exit=True)
    try:
        head = nodes.add_node(**common, include_dashboard=False, env_vars={"LFGEN_RAY_WORKDIR": head_dir})
        worker = nodes.add_node(**common, env_vars={"LFGEN_RAY_WORKDIR": worker_dir})
        nodes.wait_for_nodes()
        print(json.dumps({"address": nodes.address, "head": head.node_id, "worker": worker.node_id}), flush=True)
        for line in sys.stdin:
            if line.strip() == "kill-worker":
                nodes.remove_node(worker, allow_graceful=False)
                print("killed", flush=True)
    finally:
        nodes.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
