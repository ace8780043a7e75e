"""The Ray cluster as lfgen's --ray sees it: the address, the connection, the resources a task may ask for.

Shared by ``lfgen run --ray`` (``ray_executor``) and ``lfgen eval --ray`` (``ray_eval``). The pure parts are
tested without Ray; ``import ray`` happens only in ``connect``, when --ray is given.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from pathlib import Path
from typing import Any

from lfgen.errors import InputError, short_path

RAY_HINT = "pip install 'lfgen[ray]'"
CONNECT_TIMEOUT_S = 5.0


# --- address and resources (pure, tested without Ray) -------------------------------------------------

def parse_address(address: str | None, environ: dict[str, str]) -> str | None:
    """``auto`` -> RAY_ADDRESS, else None (a local Ray instance); ``host:port`` and ``ray://host:port`` as given."""
    if address in (None, "", "auto"):
        address = environ.get("RAY_ADDRESS") or None
        if address in (None, "auto", "local"):
            return None
    return address


def host_port(address: str) -> tuple[str, int]:
    """The GCS host and port of a cluster address (``ray://`` uses the client port, 10001 by default)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if address.startswith("ray://") else "6379"
    try:
        number = int(port)
    except ValueError:
        raise InputError(f"--ray: {address!r} is not a Ray address; write HOST:PORT, ray://HOST:PORT or auto") from None
    host = host.strip("[]") or "127.0.0.1"
    try:
        host.encode("idna")  # what the resolver does first: a part over 63 characters, or an empty one, fails there
    except UnicodeError:
        raise InputError(f"--ray: {short_path(host, 60)!r} is not a valid host name (each part between dots has 1 to "
                         "63 characters); give the head's address as HOST:PORT") from None
    return host, number


# An HTTP/2 client's first bytes: the connection preface and an empty SETTINGS frame. Ray's GCS and its client
# server (ray://) are gRPC servers, and an HTTP/2 server answers with a SETTINGS frame of its own at once.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4  # the frame type, the 4th byte of a frame's 9-byte header


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within *timeout* on an address that is not a Ray cluster: one nothing listens at (ray.init would retry
    for minutes), or a port that is open but not Ray's, whose silence ray.init would wait on for ever."""
    host, port = host_port(address)
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise InputError(f"--ray: no Ray cluster at {address} ({exc.strerror or exc}); start one with "
                         "`ray start --head` or give its address (docs/cluster.md)") from None
    answer = b""
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # gRPC over TLS: ray.init's own handshake
            return
        try:
            conn.sendall(_HTTP2_HELLO)
            while len(answer) < 9 and (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                chunk = conn.recv(9 - len(answer))
                if not chunk:
                    break
                answer += chunk
        except OSError:  # a reset, or the deadline: what came so far decides
            pass
    if len(answer) < 9 or answer[3] != _SETTINGS:
        raise InputError(f"--ray: {address} is open but does not answer as a Ray cluster (no gRPC handshake within "
                         f"{timeout:g} s); give the GCS address `ray start --head` printed (port 6379 by default), "
                         "or ray://HOST:10001 for Ray Client")


def capacity(nodes: list[dict[str, float]], cpus: float, gpus: int) -> int:
    """How many runs fit the cluster at once (each node: its CPUs and GPUs); 0 when no node can hold one."""
    total = 0
    for resources in nodes:
        fit = int(resources.get("CPU", 0) // cpus) if cpus else 1_000_000
        if gpus:
            fit = min(fit, int(resources.get("GPU", 0) // gpus))
        total += fit
    return total


def run_gpus(nodes: list[dict[str, float]], gpus_per_run: int) -> int:
    """The GPUs each run asks for: --gpus-per-run on a GPU cluster, 0 on a CPU-only one."""
    most = max((int(n.get("GPU", 0)) for n in nodes), default=0)
    if most == 0:
        if gpus_per_run > 1:
            raise InputError(f"--gpus-per-run: {gpus_per_run} GPUs per run, but the Ray cluster has no GPU")
        return 0
    if gpus_per_run > most:
        raise InputError(f"--gpus-per-run: {gpus_per_run} GPUs per run, but no node of the Ray cluster has more "
                         f"than {most} (a run's GPUs must be on one node)")
    return gpus_per_run


def check_cpus(cpus: float) -> None:
    """--cpus-per-run is refused before lfgen connects when it is not a positive number."""
    if cpus <= 0:
        raise InputError(f"--cpus-per-run: must be more than 0 (got {cpus})")


def fit(nodes: list[dict[str, float]], cpus: float, gpus_per_run: int) -> tuple[int, int]:
    """(GPUs each task asks for, tasks that fit at once) on *nodes* (their resources); InputError when none fits."""
    gpus = run_gpus(nodes, gpus_per_run)
    parallel = capacity(nodes, cpus, gpus)
    if parallel == 0:
        raise InputError(f"--cpus-per-run: {cpus} CPU(s) per run, but no node of the Ray cluster "
                         f"has that many ({', '.join(str(n.get('CPU', 0)) for n in nodes)})")
    return gpus, parallel


def same_dir(remote: str | Path, home: Path) -> bool:
    """Whether a task's folder is the driver's own (--storage that is the driver's outputs): nothing to copy."""
    remote = Path(remote)
    return remote.exists() and remote.resolve() == home.resolve()


# --- the connection -----------------------------------------------------------------------------------

FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_ENDPOINT", "USE_MODELSCOPE_HUB")  # plus the names in LFGEN_RAY_ENV


def loopback_only(address: str, own_ip: str, timeout: float = 1.0) -> bool:
    """Whether *address* is a loopback head that this machine's own address does not reach: one started with
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 --node-ip-address=127.0.0.1. A driver without that variable rewrites
    127.0.0.1 to *own_ip* (what Ray calls this node) and waits on it for ever (../shared/research/ray-optuna.md
    section 1.1); a head started normally listens on every interface and answers there too."""
    host, port = host_port(address)
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False
    if not loopback or ipaddress.ip_address(own_ip).is_loopback:
        return False
    try:
        with socket.create_connection((own_ip, port), timeout=timeout):
            return False
    except OSError:
        return True


def own_ip() -> str:
    """This machine's address as Ray picks it (the source address of a route outward; a UDP connect sends
    nothing), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("8.8.8.8", 80))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray: ray is not installed; install it with {RAY_HINT}") from None
    return ray


def connect(address: str | None) -> tuple[Any, str | None]:
    """(the ray module, connected, and the cluster address or None for a local instance) for --ray *address*;
    an address nothing listens at or a cluster that refuses the driver is one InputError. SIGTERM while it
    connects is ``Terminated`` at once (the CLI says so and exits 143)."""
    from lfgen.training.signals import Terminated, sigterm_as_interrupt

    with sigterm_as_interrupt():
        try:
            return _connect(address)
        except Terminated:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise Terminated(f"while connecting to {where}; nothing was started") from None


def _connect(address: str | None) -> tuple[Any, str | None]:
    address = parse_address(address, dict(os.environ))
    if address is not None:
        check_reachable(address)
    if address is not None and "://" not in address and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ:
        if loopback_only(address, own_ip()):  # before `import ray`, which reads the variable once
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # as the head was started: stay on loopback
    ray = import_ray()
    try:
        if address is None:  # a local instance, on loopback (../shared/research/ray-optuna.md §1.1)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise InputError(f"--ray: could not connect to {address or 'a local Ray instance'}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ray, address


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    """The cluster's live nodes, as ``ray.nodes()`` describes them (NodeID, NodeManagerAddress, Resources)."""
    return [node for node in ray.nodes() if node.get("Alive")]


def forwarded_env(environ: dict[str, str]) -> dict[str, str]:
    """The driver's variables a task passes on to its process: FORWARDED_ENV and the names in LFGEN_RAY_ENV."""
    names = FORWARDED_ENV + tuple(n for n in environ.get("LFGEN_RAY_ENV", "").split(",") if n)
    return {name: environ[name] for name in names if name in environ}


MAX_HOME_BYTES = 64 * 2**20  # a file bigger than this stays on the worker


def home_files(out: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """A run's small files (*names*, relative to its folder *out* on a worker), to be written into the driver's
    output dir: what a training or an evaluation task sends home."""
    found = {}
    for name in names:
        path = out / name
        if path.is_file() and path.stat().st_size <= MAX_HOME_BYTES:
            found[name] = path.read_bytes()
    return found
