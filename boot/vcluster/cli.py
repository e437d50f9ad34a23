"""`oar-vcluster`: an OAR Live cluster of qemu VMs on this one machine, to try it or to test it.

    oar-vcluster up --iso oar-live.iso --nodes N [--smp 1,2] [--mem MiB] [--timeout S]
                    [--firmware bios,uefi,secure-boot] [--pxe [authoritative|proxy]]
                    [--nodes-first S]
    oar-vcluster status | run -- CMD... | reboot VM | down [--keep-logs] | demo --iso ... --nodes N

`up` boots one server (`oar.role=server oar.nbmin=N`) and N nodes (`oar.role=node`: they find
the server by its beacon) from the ISO's kernel and initrd with the kernel line set per VM
(boot.vcluster.plan), the ISO as their CD (live-boot finds the squashfs there), on a private LAN
(boot.vcluster.net). It shows each VM's stage from its serial log (vcluster.stage) and the server's
`oar-autoconf status`, and returns once N nodes are Alive, or fails with the log lines that
explain why. Everything it makes is recorded in the state directory (boot.vcluster.state) so `down`
removes it all, also after a crash. Needs root (network namespace, taps), qemu, dnsmasq and ssh.

`--nodes-first SECONDS`: the order a room of machines comes up in when switched on at once:
the nodes boot first and the server only once every node's agent runs (or SECONDS passed), so
every node registers in the same storm, most of them from their watcher.

`--pxe`: the nodes have no CD and no kernel: they netboot (`-boot n`, Debian's ipxe-qemu ROM)
from the server, which boots with `oar.pxe=1` (boot.pxe). `authoritative` (the default): the
LAN's own DHCP server answers the server only, so the server gives the nodes their addresses;
`proxy`: it answers every machine, so the server serves proxy-DHCP beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from boot import console
from boot.proc import CommandError, spawn, start
from boot.vcluster import forward as vforward
from boot.vcluster import net as vnet
from boot.vcluster import stage as vstage
from boot.vcluster import state as vstate
from boot.vcluster.plan import (
    VClusterError,
    extract_boot_files,
    is_uefi,
    kernel_cmdline,
    plan_machines,
    vm_spec,
)
from boot.vcluster.remote import Remote, RemoteError, read_credentials
from boot.vcluster.stage import Stage
from boot.vcluster.state import ClusterState, Machine

TCG = "tcg,tb-size=256"
KVM_PROBE_SECONDS = 8.0  # a working KVM prints the kernel banner in well under a second
STATUS_POLL_SECONDS = 15.0  # each status costs the server a few OAR commands under emulation
# OVMF's last boot option, once every other one failed: its shell, or, under Secure Boot (the
# shell is not signed: "Security Violation"), the end of its boot options.
UEFI_GAVE_UP = ("UEFI Interactive Shell", "No bootable option or device was found")
DEMO_JOB = 'for h in $(sort -u "$OAR_NODEFILE"); do oarsh "$h" hostname; done'
CHECK_COMMAND = "oar-live check"  # the server's acceptance suite (autoconf/check.py)


# ---- processes ------------------------------------------------------------------------------


def start_detached(argv: list[str], log: Path) -> int:
    """Start a long-running process in its own session that outlives the launcher; its pid.

    The launcher stays its parent and judges it with waitpid (`_ended`); `down`, maybe from
    another launcher, stops it by its recorded pid (state.stop_ours).
    """
    with open(log, "ab") as out:
        try:
            return start(argv, stdout=out, stderr=out, new_session=True).pid
        except CommandError:
            raise VClusterError(f"{argv[0]} not found: apt-get install qemu-system-x86 "
                                "dnsmasq-base iproute2 openssh-client") from None


def kvm_works(kernel: Path, workdir: Path, wait: float = KVM_PROBE_SECONDS) -> bool:
    """Boot the ISO's kernel under KVM for a few seconds: does it print its banner?

    /dev/kvm existing is not enough: on some hosts KVM guests hang without a word.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    log = workdir / "kvm-probe.log"
    log.unlink(missing_ok=True)
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-display", "none",
            "-no-user-config", "-nodefaults", "-no-reboot", "-serial", f"file:{log}",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]  # fmt: skip
    deadline = time.monotonic() + wait
    seen = False
    with spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
               stop_signal=signal.SIGKILL) as process:
        while time.monotonic() < deadline and process.poll() is None:
            if log.exists() and vstage.KERNEL_START.search(log.read_text(errors="replace")):
                seen = True
                break
            time.sleep(0.2)
    log.unlink(missing_ok=True)
    return seen


# ---- up / down ------------------------------------------------------------------------------


def clear_stale(state_dir: Path) -> None:
    """Refuse a cluster that still runs; remove what a dead one left."""
    state = vstate.load(state_dir)
    if state is not None and (vstate.running(state) or vstate.is_ours(state.dhcp_pid, state_dir)):
        raise VClusterError(f"a virtual cluster already runs from {state_dir}: "
                            "`oar-vcluster down` first, or give another --state-dir")
    if state is not None or vstate.our_processes(state_dir):
        print(f"cleaning up what a previous cluster left in {state_dir}")
        down(state_dir, keep_logs=False, quiet=True)


def up(args: argparse.Namespace) -> ClusterState:
    state_dir = args.state_dir
    iso = Path(args.iso).resolve()
    if not iso.is_file():
        raise VClusterError(f"{iso}: no such ISO (build one with `make iso`)")
    credentials = None if args.user and args.password else read_credentials(iso)
    user = args.user or credentials.user
    password = args.password or credentials.password
    if os.geteuid() != 0:
        raise VClusterError("oar-vcluster needs root (it creates a network namespace and taps)")
    clear_stale(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    kernel, initrd, base = extract_boot_files(iso, state_dir / "boot")
    accel = {"kvm": "kvm", "tcg": TCG}.get(args.accel) or (
        "kvm" if kvm_works(kernel, state_dir) else TCG)
    machines = plan_machines(args.nodes, args.smp, args.mem, args.server_smp, args.server_mem,
                             args.firmware)
    pxe = getattr(args, "pxe", None)
    if pxe == "authoritative":  # the server's DHCP gives the nodes their addresses
        machines = tuple(m if m.role == "server" else replace(m, address="") for m in machines)
    state = ClusterState(state_dir, vnet.new_netns_name(), iso=str(iso), accel=accel,
                         nbmin=args.nodes, user=user, machines=machines)
    state.save()  # the namespace's name is recorded before the namespace exists
    net = vnet.VirtualNetwork(state.netns, state_dir)
    net.create()
    known = [m for m in machines if m.address]
    state = replace(state, dhcp_pid=start_detached(
        net.dhcp_argv([(m.mac, m.address) for m in known], known_only=pxe == "authoritative"),
        state_dir / "dnsmasq.out.log"))
    state.save()
    print(f"{len(machines)} VMs ({accel.split(',')[0]}), network {vnet.SUBNET} in namespace "
          f"{state.netns}, logs in {state_dir}")
    nodes_first = getattr(args, "nodes_first", None)
    if nodes_first is not None and pxe:
        raise VClusterError("--nodes-first with --pxe: netbooting nodes need their server up")
    for machine in boot_order(machines, nodes_first is not None):
        if machine.role == "server" and nodes_first is not None:
            wait_nodes_started(state, nodes_first, started)
        net.add_tap(machine.index)
        spec = vm_spec(state, machine, kernel, initrd,
                       kernel_cmdline(base, machine, args.nodes, pxe=bool(pxe)),
                       netboot=bool(pxe) and machine.role == "node")
        state.serial_log(machine).write_bytes(b"")
        pid = start_detached(net.inside(spec.argv()), state_dir / f"{machine.name}.qemu.log")
        state = state.with_machine(replace(machine, pid=pid))
        state.save()
    state = forward_web_port(state, getattr(args, "web_port", 0))
    wait_ready(state, password, args.timeout, started)
    print(f"cluster page: {web_url(state)} (Monika, Drawgantt, REST API /oarapi/; forwarded "
          f"from this machine's 127.0.0.1 to the server's {console.web_page(vnet.ip_address(0))})",
          flush=True)
    return state


def web_url(state: ClusterState) -> str:
    """The cluster page as this machine's browser opens it."""
    return f"http://127.0.0.1:{state.web_port}/"


def forward_web_port(state: ClusterState, port: int) -> ClusterState:
    """Bind 127.0.0.1:`port` (0: a free one) here and forward it into the namespace to the
    server's web port (boot.vcluster.forward); the state records the port and the process."""
    try:
        listener = vforward.listen_on_loopback(port)
    except OSError as exc:
        raise VClusterError(f"cannot listen on 127.0.0.1:{port} for the cluster page: "
                            f"{exc.strerror or exc} (give another --web-port)") from None
    with listener:
        net = vnet.VirtualNetwork(state.netns, state.state_dir)
        argv = net.inside([sys.executable, "-m", vstate.FORWARDER, "--listen-fd",
                           str(listener.fileno()), "--to", f"{vnet.ip_address(0)}:80",
                           "--pid-file", str(state.state_dir / "forward.pid")])
        with open(state.state_dir / "forward.log", "ab") as out:
            pid = start(argv, stdout=out, stderr=out, new_session=True,
                        pass_fds=(listener.fileno(),),
                        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])}).pid
        state = replace(state, web_port=listener.getsockname()[1], forward_pid=pid)
    state.save()
    return state


def boot_order(machines: tuple[Machine, ...], nodes_first: bool) -> list[Machine]:
    """The order to start the VMs in: as planned (server first), or every node first."""
    if not nodes_first:
        return list(machines)
    return [m for m in machines if m.role != "server"] + [m for m in machines
                                                           if m.role == "server"]


def wait_nodes_started(state: ClusterState, seconds: float, started: float) -> int:
    """Wait until every node's boot agent runs (or `seconds` passed); how many do."""
    deadline = time.monotonic() + seconds
    while True:
        running = sum(
            vstage.progress(state.serial_log(m).read_text(errors="replace"), "node").stage.rank
            >= Stage.AGENT.rank for m in state.nodes if m.pid)
        if running == len(state.nodes) or time.monotonic() >= deadline:
            print(f"{time.monotonic() - started:6.0f}s  {running} of {len(state.nodes)} nodes "
                  "booted with no server: starting the server", flush=True)
            return running
        time.sleep(2)


def _describe(m: Machine) -> str:
    return (f"{m.name:<8} {m.address or 'by server':<11} {m.cpus} CPU {m.memory_mib:>5} MiB"
            + {"uefi": " UEFI", "secure-boot": " UEFI Secure Boot"}.get(m.firmware, ""))


def wait_ready(state: ClusterState, password: str | None, timeout: float,
               started: float) -> dict:
    """Show each VM's stage until nbmin nodes are Alive on the server; their status."""
    remote = Remote(state, password, share_connection=False)
    resets: dict[str, int] = {}
    shown: dict[str, tuple[Stage, str]] = {}
    alive_hosts: set[str] = set()
    last_poll = 0.0
    ready: dict | None = None
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        stages = {}
        for m in state.machines:
            ended = _ended(m.pid, state.state_dir)
            if ended is not None:
                raise VClusterError(f"{m.name}: qemu stopped ({ended}):\n" + _tail(
                    state.state_dir / f"{m.name}.qemu.log") + "\n" + _excerpt(state, m))
            _reset_if_gave_up(state, m, resets, now - started)
            p = vstage.progress(_log(state, m), m.role)
            stage, detail = p.stage, p.detail
            if m.oar_hostname in alive_hosts:
                stage = Stage.ALIVE
            stages[m.name] = stage
            if shown.get(m.name) != (stage, detail):
                shown[m.name] = (stage, detail)
                print(f"{now - started:6.0f}s  {_describe(m)}  {stage}"
                      + (f" ({detail})" if detail else ""), flush=True)
            if stage is Stage.FAILED:
                raise VClusterError(f"{m.name} failed: {detail}\n" + _excerpt(state, m))
        if ready is not None:
            print(f"{now - started:6.0f}s  cluster ready: {len(alive_hosts)} of {state.nbmin} "
                  "nodes Alive", flush=True)
            return ready
        if stages["server"].rank >= Stage.REGISTERED.rank and now - last_poll > STATUS_POLL_SECONDS:
            last_poll = now
            status = remote.cluster_status()
            if status is not None:
                alive_hosts = {n["host"] for n in status["nodes"] if n["state"] == "Alive"}
                ready = status if status.get("ready") else None
                continue  # show at once the stages this poll learnt
        if now > deadline:
            late = [m for m in state.machines if stages[m.name] is not Stage.ALIVE]
            raise VClusterError(
                f"the cluster was not ready within {timeout:.0f} s; not there yet: "
                + ", ".join(f"{m.name} ({stages[m.name]})" for m in late) + "\n"
                + "\n".join(f"--- {m.name}:\n{_excerpt(state, m)}" for m in late))
        time.sleep(2)


def _reset_if_gave_up(state: ClusterState, m: Machine, resets: dict[str, int],
                      elapsed: float) -> None:
    """Power-cycle a UEFI machine whose firmware gave up netbooting (it ends in its shell).

    A BIOS node retries by itself (qemu's reboot-timeout); OVMF, like many UEFI machines,
    tries each boot option once. Nodes switched on with their server ask before the server
    serves PXE, so the launcher does what an administrator would: reset it.
    """
    if not is_uefi(m.firmware):
        return
    log = _log(state, m)
    gave_up = sum(log.count(marker) for marker in UEFI_GAVE_UP)
    if gave_up > resets.get(m.name, 0):
        resets[m.name] = gave_up
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as monitor:
                monitor.settimeout(10)
                monitor.connect(str(state.state_dir / f"{m.name}.monitor.sock"))
                _read_until(monitor, b"(qemu) ")  # a command sent before the prompt is lost
                monitor.sendall(b"system_reset\n")
                _read_until(monitor, b"(qemu) ")  # taken: qemu prompts again
        except OSError as exc:  # the wait goes on; its deadline says the rest
            print(f"{elapsed:6.0f}s  {m.name}: its firmware found no netboot server yet; "
                  f"could not reset it ({exc})", flush=True)
            return
        print(f"{elapsed:6.0f}s  {m.name}: its firmware found no netboot server yet: reset",
              flush=True)


def _read_until(conn: socket.socket, marker: bytes) -> None:
    seen = b""
    while marker not in seen:
        chunk = conn.recv(4096)
        if not chunk:
            return
        seen = seen[-64:] + chunk


def _ended(pid: int | None, state_dir: Path) -> str | None:
    """How a VM's process ended, or None while it runs.

    The launcher started it, so waitpid answers for sure, even in the instant when
    `ip netns exec` turns into qemu and /proc/PID/cmdline reads empty. A process the launcher
    did not start (or already reaped) is judged by its command line.
    """
    if pid is None:
        return "never started"
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if vstate.is_ours(pid, state_dir) else "no longer running"
    if done == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _log(state: ClusterState, m: Machine) -> str:
    path = state.serial_log(m)
    return path.read_bytes().decode(errors="replace") if path.exists() else ""


def _excerpt(state: ClusterState, m: Machine) -> str:
    return vstage.excerpt(_log(state, m))


def _tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def down(state_dir: Path, keep_logs: bool, quiet: bool = False) -> None:
    """Stop every VM and the DHCP server, delete the namespace, remove the files."""
    state = vstate.load(state_dir)
    pids = set(vstate.our_processes(state_dir))
    if state is not None:
        pids |= {p for p in [state.dhcp_pid, state.forward_pid, *(m.pid for m in state.machines)]
                 if vstate.is_ours(p, state_dir)}
    vstate.stop_ours(sorted(pids), state_dir)
    removed_netns = False
    if state is not None:
        try:
            removed_netns = vnet.VirtualNetwork(state.netns, state_dir).delete()
        except CommandError as exc:
            raise VClusterError(f"could not delete namespace {state.netns}: {exc}") from None
    vstate.remove_files(state_dir, keep_logs)
    if not quiet:
        what = [f"{len(pids)} process(es) stopped"]
        if removed_netns:
            what.append(f"namespace {state.netns} deleted")
        what.append(f"logs kept in {state_dir}" if keep_logs else f"{state_dir} removed")
        print("oar-vcluster down: " + ", ".join(what))


# ---- the other commands ---------------------------------------------------------------------


def _running_state(state_dir: Path) -> ClusterState:
    state = vstate.load(state_dir)
    if state is None or not vstate.running(state):
        raise VClusterError(f"no virtual cluster runs from {state_dir}: `oar-vcluster up` first")
    return state


def status(args: argparse.Namespace) -> int:
    state = _running_state(args.state_dir)
    running = {m.name for m in vstate.running(state)}
    remote = Remote(state, args.password)
    for m in state.machines:
        p = vstage.progress(_log(state, m), m.role)
        if not m.address and m.name in running:  # leased by the server: where it is now
            with contextlib.suppress(RemoteError):
                m = replace(m, address=remote.address(m))
        print(f"{_describe(m)}  {'running' if m.name in running else 'stopped':<8} {p.stage}"
              + (f" ({p.detail})" if p.detail else ""))
    if state.web_port and vstate.is_ours(state.forward_pid, state.state_dir):
        print(f"cluster page: {web_url(state)}")
    result = remote.run("oarnodes -s", timeout=90, check=False)
    print(result.stdout.rstrip() or result.stderr.rstrip())
    return 0 if result.returncode == 0 else 1


def run_command(args: argparse.Namespace) -> int:
    state = _running_state(args.state_dir)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise VClusterError("give a command: oar-vcluster run -- oarnodes -s")
    line = command[0] if len(command) == 1 else shlex.join(command)
    machine = state.machine(args.on) if args.on else None
    result = Remote(state, args.password).run(line, machine, timeout=args.timeout, check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def reboot(args: argparse.Namespace) -> int:
    """Reboot one VM from inside (as an administrator would); qemu restarts the same kernel."""
    state = _running_state(args.state_dir)
    machine = state.machine(args.vm)
    Remote(state, args.password).run("sudo -n systemctl reboot", machine, timeout=60, check=False)
    print(f"{machine.name}: rebooting")
    return 0


def demo(args: argparse.Namespace) -> int:
    """up, a job on two nodes that runs `hostname` on each of them through oarsh, the
    cluster's own acceptance suite (`oar-live check`), down."""
    try:
        state = up(args)
        remote = Remote(state, args.password)
        nodes = min(2, args.nodes)
        print(f"oarsub -l nodes={nodes} '{DEMO_JOB}'", flush=True)
        job = remote.submit(DEMO_JOB, f"nodes={nodes}")
        final = remote.wait_job(job, timeout=600)
        print(f"job {job}: {final}; its output (OAR.{job}.stdout):")
        print(remote.job_output(job).rstrip())
        print(f"sudo {CHECK_COMMAND}", flush=True)
        check = remote.run(f"sudo -n {CHECK_COMMAND}", timeout=900, check=False)
        print((check.stdout + check.stderr).rstrip())
        return 0 if final == "Terminated" and check.returncode == 0 else 1
    finally:
        down(args.state_dir, keep_logs=args.keep_logs)


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oar-vcluster", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", type=Path, default=vstate.default_state_dir(),
                   help="where the cluster's state and logs live (default: %(default)s)")
    p.add_argument("--password", default=os.environ.get("OAR_VCLUSTER_PASSWORD"),
                   help="the image's job account password (default: from the .credentials "
                        "file build-iso wrote beside the ISO)")
    sub = p.add_subparsers(dest="action", required=True)
    for name in ("up", "demo"):
        s = sub.add_parser(name, help="boot a server and N nodes" + (
            ", run a 2-node job and oar-live check, stop" if name == "demo" else ""))
        s.add_argument("--iso", required=True, help="an OAR Live ISO (make iso: out/oar-live.iso)")
        s.add_argument("--nodes", type=int, default=2, help="compute nodes (default 2)")
        s.add_argument("--smp", type=int_list, default=[1], help="CPUs of each node, e.g. 1,2")
        s.add_argument("--mem", type=int_list, default=[1024], help="MiB of each node")
        s.add_argument("--firmware", type=lambda t: t.split(","), default=["bios"],
                       help="bios, uefi or secure-boot (UEFI enforcing it), per node, e.g. "
                            "bios,secure-boot (the server boots BIOS)")
        s.add_argument("--server-smp", type=int, default=1)
        s.add_argument("--server-mem", type=int, default=1024)
        s.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                       help="auto: KVM only when a probe boot shows it works")
        s.add_argument("--user", help="the image's job account (default: from the ISO's "
                                      ".credentials file)")
        s.add_argument("--timeout", type=float, default=900, help="seconds to wait for ready")
        s.add_argument("--nodes-first", type=float, metavar="SECONDS",
                       help="boot the nodes first and the server once their agents run "
                            "(at most SECONDS later), as a room switched on at once")
        s.add_argument("--web-port", type=int, default=0,
                       help="this machine's 127.0.0.1 port for the cluster page (default: a "
                            "free one, printed)")
        s.add_argument("--pxe", nargs="?", const="authoritative",
                       choices=("authoritative", "proxy"),
                       help="nodes netboot from the server (oar.pxe=1); proxy: beside the "
                            "LAN's DHCP server")
        if name == "demo":
            s.add_argument("--keep-logs", action="store_true")
    s = sub.add_parser("status", help="each VM's stage and `oarnodes -s`")
    s = sub.add_parser("run", help="run a command on the server as the job user")
    s.add_argument("--on", help="another VM (server, node-1, ...)")
    s.add_argument("--timeout", type=float, default=600)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s = sub.add_parser("reboot", help="reboot one VM (server, node-1, ...)")
    s.add_argument("vm")
    s = sub.add_parser("down", help="stop everything and remove what up made")
    s.add_argument("--keep-logs", action="store_true", help="keep the *.log files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.state_dir = args.state_dir.resolve()
    try:
        if args.action == "up":
            try:
                up(args)
            except VClusterError as exc:
                if vstate.load(args.state_dir) is None:
                    raise
                raise VClusterError(f"{exc}\nthe VMs are left running for a look (logs in "
                                    f"{args.state_dir}); `oar-vcluster down` stops them") from None
            return 0
        if args.action == "down":
            down(args.state_dir, args.keep_logs)
            return 0
        return {"status": status, "run": run_command, "reboot": reboot, "demo": demo}[
            args.action](args)
    except (VClusterError, RemoteError, CommandError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        print(f"oar-vcluster: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"oar-vcluster: interrupted; the VMs keep running: `oar-vcluster down` "
              f"--state-dir {args.state_dir}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

