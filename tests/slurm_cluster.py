"""A private single-node Slurm cluster for tests (see ../../shared/notes/slurm.md).

    with SlurmCluster() as cluster:          # munged, slurmctld, slurmd under a temp prefix
        subprocess.run(["sbatch", ...], env=cluster.env())

Everything lives under its own prefix (``/tmp/p2p-slurm-XXXX``): munge key and socket,
``slurm.conf``, spool, pid and log files. Ports are chosen free per run, so leftovers of a
crashed earlier run (or another developer's cluster on the same host) do not collide.
``/etc/slurm`` is never touched: clients find the cluster through ``SLURM_CONF``. Because the
slurm-jobstep executor plugin strips ``SLURM_*`` (``SLURM_CONF`` too) before its nested
``srun``, ``<prefix>/bin/srun`` re-exports ``SLURM_CONF`` and runs the real ``srun``: put
``cluster.bin_dir`` first on PATH (``cluster.env()`` does).

``SlurmCluster(nodes=2)`` is a two-node cluster on this one machine: each node is a network
namespace of its own (``ip netns``) with its own address on a private bridge, its own UTS name
(``n1``, ``n2``: what ``hostname`` prints in its jobs) and its own ``/etc/hosts`` (a bind mount of
``<prefix>/etc/hosts`` naming every node), and runs its own ``slurmd -N nK``; slurmctld runs in the
root namespace on the bridge's address. Jobs on the two nodes talk over the bridge only, like two
hosts on one switch; the file system (munge socket, prefix, working trees) is shared, like NFS.
Needs root and ``ip`` (iproute2) with bridge and veth support.

Daemons are stopped by the PIDs in their pid files, TERM then KILL; a multi-node cluster then kills
what still runs in its namespaces and removes them and the bridge.

Raises :class:`SlurmUnavailable` where Slurm cannot be installed or started (tests skip on it)
and :class:`SlurmStartError`, a subclass with the daemons' log tails, where the daemons were
started but did not come up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
# command -> Debian package that provides it
COMMANDS = {
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "srun": "slurm-client",
    "squeue": "slurm-client",
    "sinfo": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
    "munged": "munge",
    "mungekey": "munge",
}
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here (a reason to skip, not a test failure)."""


class SlurmStartError(SlurmUnavailable):
    """The daemons were started but the node did not become idle; carries the log tails."""


def _which(cmd: str) -> str | None:
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(cmd, path=path)


def missing_commands() -> list[str]:
    return [c for c in COMMANDS if _which(c) is None]


def ensure_installed(install: bool = True) -> None:
    """Install the Debian packages if a command is missing (root with apt-get only)."""
    missing = missing_commands()
    if not missing:
        return
    pkgs = sorted({COMMANDS[c] for c in missing})
    why = f"Slurm commands not found: {', '.join(missing)} (Debian packages {' '.join(pkgs)})"
    if not install:
        raise SlurmUnavailable(why)
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{why}; not root, so not installing them")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"{why}; no apt-get here to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:  # stale package lists: update once, then retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    still = missing_commands()
    if res.returncode != 0 or still:
        raise SlurmUnavailable(f"{why}; `{' '.join(cmd)}` failed (exit {res.returncode}): "
                               f"{(res.stderr or res.stdout)[-1500:]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"  ({path}: {e})"
    return "\n".join(f"  {line}" for line in text[-lines:]) or "  (empty)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone (daemons are reparented to PID 1, which may reap them late)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _pid_is(pid: int, name: str) -> bool:
    """Whether PID still runs the daemon NAME (guards against a reused PID)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(cmd) == name


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _stepd_pids(spool: Path) -> list[int]:
    """slurmstepd processes of this cluster: those holding a socket under its SlurmdSpoolDir."""
    inodes = set()
    try:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith(f"{spool}/"):
                inodes.add(f"socket:[{parts[6]}]")
    except OSError:
        return []
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"slurmstepd"):
                continue
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


class SlurmCluster:
    """munged + slurmctld + slurmd for this host (or, with NODES > 1, one slurmd per network
    namespace: see the module docstring), under a private temp prefix."""

    def __init__(self, prefix: str | Path | None = None, start_timeout: float = 60.0,
                 install: bool = True, min_job_age: int = 7200, cpus: int | None = None, nodes: int = 1):
        self._given_prefix = Path(prefix) if prefix else None
        self._made_prefix: Path | None = None  # the temp prefix start() made (cleanup removes it)
        self._set_prefix(self._given_prefix)
        self.start_timeout = start_timeout
        self.install = install
        self.min_job_age = min_job_age
        self.cpus = cpus  # None: the host's; more lets that many 1-CPU jobs run at once (oversubscribed)
        self.pids: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.nodename = socket.gethostname().split(".")[0]
        self.ctld_port = self.slurmd_port = None
        self.nodes = int(nodes)
        # one node: this host on 127.0.0.1; more: n1, n2, ... in network namespaces (see _net_up)
        self.node_names = [self.nodename] if self.nodes == 1 else [f"n{i}" for i in range(1, self.nodes + 1)]
        self.ctld_addr = "127.0.0.1"
        self.node_addrs = {self.nodename: "127.0.0.1"} if self.nodes == 1 else {}
        self.netns: dict[str, str] = {}  # node -> namespace (multi-node only)
        self.veths: dict[str, str] = {}  # node -> the root namespace's end of its veth pair
        self.bridge: str | None = None

    # ---------------------------------------------------------------- files
    def _set_prefix(self, prefix: Path | None) -> None:
        """PREFIX, or a placeholder until start() makes /tmp/p2p-slurm-XXXX (short: the munge
        socket path must stay under 108 bytes)."""
        self.prefix = (prefix or Path("/tmp/p2p-slurm-unstarted")).resolve()
        self.conf = self.prefix / "etc" / "slurm.conf"
        self.bin_dir = self.prefix / "bin"
        self.log_dir = self.prefix / "log"
        self.run_dir = self.prefix / "run"
        self.munge_socket = self.prefix / "munge" / "munge.socket"
        self.hosts_file = self.prefix / "etc" / "hosts"  # the nodes' /etc/hosts (multi-node)

    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"

    def env(self, base: dict | None = None) -> dict[str, str]:
        """BASE (default os.environ) without inherited SLURM_*/SBATCH_*/SRUN_* variables, with
        SLURM_CONF pointing here and the srun wrapper first on PATH."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", os.defpath), *SBIN])
        return env

    def _run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([_which(cmd[0]) or cmd[0], *cmd[1:]], env=self.env(), capture_output=True,
                             text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise SlurmStartError(f"`{' '.join(cmd)}` failed (exit {res.returncode}): {res.stderr.strip()}"
                                  + self.log_tails())
        return res

    def _node_line(self) -> str:
        """The hardware part of `slurmd -C`'s first line (CPUs=... RealMemory=...)."""
        res = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30)
        first = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
        fields = [f for f in first.split() if not f.startswith("NodeName=")]
        if not fields:
            raise SlurmUnavailable(f"`slurmd -C` printed no node line: {res.stdout!r} {res.stderr!r}")
        if self.cpus:  # one socket of `cpus` cores (SlurmdParameters=config_overrides accepts it)
            fields = [f"CPUs={self.cpus}", "Boards=1", "SocketsPerBoard=1", f"CoresPerSocket={self.cpus}",
                      "ThreadsPerCore=1", *[f for f in fields if f.startswith("RealMemory=")]]
        return " ".join(fields)

    def write_config(self) -> None:
        for sub in ("etc", "bin", "log", "run", "spool/ctld", "spool/d", "munge"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.prefix, 0o755)
        os.chmod(self.munge_socket.parent, 0o755)
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        p, n = self.prefix, self.nodename
        multi = self.nodes > 1  # per-node slurmd files: %n is the node name
        for node in self.node_names if multi else []:
            (self.prefix / "spool" / "d" / node).mkdir(parents=True, exist_ok=True)
        hw = self._node_line()
        node_lines = "\n".join(
            f"NodeName={node} NodeAddr={self.node_addrs[node]}{f' NodeHostname={node}' if multi else ''} {hw} State=UNKNOWN"
            for node in self.node_names)
        self.conf.write_text(f"""\
# private {self.nodes}-node test cluster (tests/slurm_cluster.py)
ClusterName=p2ptest
SlurmctldHost={n}({self.ctld_addr})
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={p}/spool/ctld
SlurmdSpoolDir={p}/spool/d{"/%n" if multi else ""}
SlurmctldPidFile={self.pid_file("slurmctld")}
SlurmdPidFile={self.pid_file("slurmd-%n" if multi else "slurmd")}
SlurmctldLogFile={self.log_file("slurmctld")}
SlurmdLogFile={self.log_file("slurmd-%n" if multi else "slurmd")}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge={self.min_job_age}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
{"SlurmdParameters=config_overrides" if self.cpus else "# SlurmdParameters: the node as found"}
{node_lines}
PartitionName=debug Nodes={",".join(self.node_names)} Default=YES MaxTime=INFINITE State=UP
""")
        # The jobstep plugin drops SLURM_CONF before `srun -n1 ... snakemake`: re-export it.
        srun = self.bin_dir / "srun"
        srun.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec "{_which("srun")}" "$@"\n')
        srun.chmod(0o755)

    # ---------------------------------------------------------------- start / stop
    def daemon_names(self) -> list[str]:
        """Stop order: the slurmd of each node (``slurmd-n1``... on a multi-node cluster), slurmctld, munged."""
        slurmds = ["slurmd"] if self.nodes == 1 else [f"slurmd-{node}" for node in self.node_names]
        return [*slurmds, "slurmctld", "munged"]

    def _daemon(self, name: str, *args: str, wrap: tuple[str, ...] = ()) -> None:
        """Start a self-daemonising daemon (NAME, or NAME-<node>: the binary is the part before
        the dash) under the command prefix WRAP and record the PID from its pid file."""
        log = self.log_dir / f"{name}.stdout"
        with open(log, "ab") as out:
            res = subprocess.run([*wrap, _which(name.split("-")[0]), *args], env=self.env(), stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30)
        pid_file = self.pid_file(name)
        if res.returncode != 0:  # failed before daemonising (bad config, port in use, ...)
            raise SlurmStartError(f"{name} exited {res.returncode} at start" + self.log_tails())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
                if _pid_alive(pid):
                    self.pids[name] = pid
                    return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.05)
        raise SlurmStartError(f"{name} did not start (exit {res.returncode}, no live pid in {pid_file})"
                              + self.log_tails())

    def start(self) -> "SlurmCluster":
        t0 = time.monotonic()
        ensure_installed(self.install)
        self.timings["install_check_s"] = time.monotonic() - t0
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd needs root (SlurmdUser=root)")
        t1 = time.monotonic()
        if self._given_prefix is None:
            self._made_prefix = Path(tempfile.mkdtemp(prefix="p2p-slurm-", dir="/tmp"))
            self._set_prefix(self._made_prefix)
        try:
            if self.nodes > 1:
                self._net_up()
            self.write_config()
            key = self.prefix / "munge" / "munge.key"
            self._run("mungekey", "--create", f"--keyfile={key}")
            os.chmod(key, 0o400)
            self._daemon("munged", f"--key-file={key}", f"--socket={self.munge_socket}",
                         f"--pid-file={self.pid_file('munged')}", f"--log-file={self.log_file('munged')}",
                         f"--seed-file={self.prefix / 'munge' / 'munge.seed'}")
            self._daemon("slurmctld", "-f", str(self.conf))
            if self.nodes == 1:
                self._daemon("slurmd", "-f", str(self.conf))
            for node in self.netns:  # in its namespace, with its own hostname and /etc/hosts
                self._daemon(f"slurmd-{node}", "-f", str(self.conf), "-N", node, wrap=self.on_node(node))
            self.wait_idle()
        except BaseException:
            self.stop()
            self.cleanup()  # the error message carries the log tails
            raise
        self.timings["start_s"] = time.monotonic() - t1
        return self

    def node_state(self) -> str:
        """sinfo's state of each node, space-separated ("idle idle" for two idle nodes)."""
        res = self._run("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False)
        return " ".join(res.stdout.split()) if res.returncode == 0 else f"(sinfo exit {res.returncode}: {res.stderr.strip()})"

    def wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.node_state()
            if state == " ".join(["idle"] * self.nodes):
                return
            for name, pid in self.pids.items():
                if not _pid_alive(pid):
                    raise SlurmStartError(f"{name} (pid {pid}) died while waiting for the node" + self.log_tails())
            time.sleep(0.25)
        raise SlurmStartError(f"nodes {','.join(self.node_names)} not idle after {self.start_timeout:.0f} s "
                              f"(sinfo: {state!r})" + self.log_tails())

    def log_tails(self) -> str:
        parts = []
        for name in ("munged", "slurmctld", *self.daemon_names()[:-2]):
            for path in (self.log_file(name), self.log_dir / f"{name}.stdout"):
                if path.exists() and path.stat().st_size:
                    parts.append(f"\n--- {path}:\n{_tail(path)}")
        return "".join(parts)

    def cancel_all(self, wait: float = 15.0) -> None:
        """scancel every job of this cluster (left by an interrupted test); wait for the queue to drain."""
        if not (self.pids.get("slurmctld") and _pid_alive(self.pids["slurmctld"])):
            return
        try:
            if not self._run("squeue", "-h", "-o", "%i", timeout=10, check=False).stdout.strip():
                return
            self._run("scancel", "--user", str(os.geteuid()), "--full", timeout=10, check=False)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                res = self._run("squeue", "-h", "-o", "%i", timeout=10, check=False)
                if res.returncode != 0 or not res.stdout.strip():
                    return
                time.sleep(0.25)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def stop(self, grace: float = 10.0) -> dict[str, int]:
        """TERM, then KILL after GRACE s, each daemon by its pid-file PID. Returns the PIDs."""
        t0 = time.monotonic()
        self.cancel_all()
        for name in self.daemon_names():
            try:  # pid file first (a daemon may have re-exec'd), the recorded PID otherwise
                pid = int(self.pid_file(name).read_text().split()[0])
                if _pid_is(pid, name.split("-")[0]):
                    self.pids[name] = pid
            except (OSError, ValueError, IndexError):
                pass
        stopped = dict(self.pids)
        # One at a time: slurmctld shuts down slowly once munged is gone.
        for name in self.daemon_names():
            pid, binary = self.pids.get(name), name.split("-")[0]
            if not pid or not _pid_alive(pid) or not _pid_is(pid, binary):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.05)
            if _pid_alive(pid) and _pid_is(pid, binary):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and _pid_alive(pid):
                    time.sleep(0.05)
        # job steps that outlived slurmd (a run killed mid-job): they are not in any pid file
        for stepd in _stepd_pids(self.prefix / "spool" / "d"):
            for pid in [stepd, *_descendants(stepd)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._net_down()
        self.timings["stop_s"] = time.monotonic() - t0
        return stopped

    # ---------------------------------------------------------------- network (nodes > 1)
    @staticmethod
    def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise SlurmUnavailable(f"`ip {' '.join(args)}` failed (exit {res.returncode}): {res.stderr.strip()}")
        return res

    def _net_up(self) -> None:
        """A bridge in the root namespace (slurmctld's address 10.X.0.1) and per node a network
        namespace joined to it by a veth pair (10.X.0.11, .12, ...), its own lo, and a hosts file
        naming every node (see on_node). X: a 10.X.0.0/24 no interface here uses yet."""
        if shutil.which("ip") is None:
            raise SlurmUnavailable("a multi-node cluster needs `ip` (iproute2) for network namespaces")
        used = self._ip("-4", "-o", "addr").stdout
        start = 77 + os.getpid() % 150  # two clusters started at once rarely try the same subnet first
        x = next((x for x in [*range(start, 255), *range(77, start)] if f"inet 10.{x}." not in used), None)
        if x is None:
            raise SlurmUnavailable("no free 10.X.0.0/24 subnet for the cluster's bridge")
        tag = f"p2p{os.getpid() % 100000}"  # interface names: at most 15 characters
        self.ctld_addr = f"10.{x}.0.1"
        self.node_addrs = {node: f"10.{x}.0.{11 + i}" for i, node in enumerate(self.node_names)}
        # bridged frames skip iptables where the kernel lets a bridge say so (a host firewall's
        # FORWARD policy, e.g. Docker's DROP, would otherwise cut the nodes off from each other)
        if self._ip("link", "add", f"{tag}br", "type", "bridge", "nf_call_iptables", "0", check=False).returncode:
            self._ip("link", "add", f"{tag}br", "type", "bridge")
        self.bridge = f"{tag}br"
        self._ip("addr", "add", f"{self.ctld_addr}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        self.hosts_file.parent.mkdir(parents=True, exist_ok=True)
        self.hosts_file.write_text("127.0.0.1 localhost\n" + f"{self.ctld_addr} {self.nodename}\n" + "".join(
            f"{addr} {node}\n" for node, addr in self.node_addrs.items()))
        for node, addr in self.node_addrs.items():
            ns, veth = f"{tag}-{node}", f"{tag}{node}"
            self._ip("netns", "add", ns)
            self.netns[node] = ns
            self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.veths[node] = veth
            self._ip("link", "set", veth, "master", self.bridge, "up")
            self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")

    def _net_down(self) -> None:
        """Kill whatever still runs in the nodes' namespaces (job steps, ranks), then delete the
        namespaces (their veths go with them) and the bridge."""
        for node, ns in list(self.netns.items()):
            for _ in range(50):
                pids = [int(p) for p in self._ip("netns", "pids", ns, check=False).stdout.split()]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
            self._ip("netns", "del", ns, check=False)
            del self.netns[node]
            self.veths.pop(node, None)
        if self.bridge:
            self._ip("link", "del", self.bridge, check=False)
            self.bridge = None

    def node_traffic(self, node: str) -> dict[str, int]:
        """Bytes NODE has sent ("sent") and received ("received") over its link to the bridge."""
        stats = Path("/sys/class/net") / self.veths[node] / "statistics"
        # the root namespace's end: what it receives, the node sent
        return {"sent": int((stats / "rx_bytes").read_text()), "received": int((stats / "tx_bytes").read_text())}

    def on_node(self, node: str) -> tuple[str, ...]:
        """The command prefix that runs a command as on NODE: in its network namespace (nsenter:
        `ip netns exec` would remount /sys, and slurmd then finds no /sys/fs/cgroup), in a UTS
        namespace whose hostname is NODE, and in a mount namespace where the cluster's hosts file
        is /etc/hosts (the real /etc is never written)."""
        return ("nsenter", f"--net=/run/netns/{self.netns[node]}", "unshare", "--uts", "--mount", "sh", "-c",
                'mount --bind "$1" /etc/hosts && hostname "$0" && shift && exec "$@"', node, str(self.hosts_file))

    def run_on(self, node: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
        """Run CMD as on NODE (see on_node) with the cluster's environment."""
        return subprocess.run([*self.on_node(node), *cmd], env=self.env(), **kw)

    def alive(self) -> dict[str, int]:
        return {n: p for n, p in self.pids.items() if _pid_alive(p)}

    def cleanup(self) -> None:
        """Remove our own prefix once nothing of ours runs any more."""
        if self._made_prefix is not None and not self.alive():
            shutil.rmtree(self._made_prefix, ignore_errors=True)
            self._made_prefix = None

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()
