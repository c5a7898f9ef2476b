#!/usr/bin/env python3
"""Benchmark driver for scripts/bench.sh (issue 7).

Orchestration only: the measuring loops run in the release `p2p` binary and in
`examples/loadgen.rs`. Every figure is measured next to its baseline in the
same run; results go to stdout (a Markdown table), to BENCHMARKS.md and to
target/bench/results.json. Exit status 1 if any figure could not be measured.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid

import matrix  # figure 10
import netchange  # figure 11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

PROCS = []  # every child we start, so that cleanup can end them all
PROCS_LOCK = threading.Lock()


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def spawn(args, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(args, start_new_session=True, **kw)
    with PROCS_LOCK:
        PROCS.append(p)
    return p


def stop(p, sig=signal.SIGINT, wait=5.0):
    """Ends one child (and its process group): `sig`, then SIGKILL."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    with PROCS_LOCK:
        if p in PROCS:
            PROCS.remove(p)


def cleanup():
    with PROCS_LOCK:
        procs = list(PROCS)
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 3
    for p in procs:
        try:
            p.wait(max(0.05, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    with PROCS_LOCK:
        PROCS.clear()


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid):
    """CPU seconds per thread name, from /proc/PID/task/*/stat."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        secs = (int(fields[11]) + int(fields[12])) / CLK_TCK
        out[name] = out.get(name, 0.0) + secs
    return out


def read_events(path):
    evs = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        evs.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return evs


def wait_for(pred, timeout, what, interval=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def median(xs):
    return statistics.median(xs) if xs else None


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


class Internet:
    """Two homes behind NATs and a public network, in network namespaces, as
    tests/it/nat.rs builds them (see there): hostA ─ routerA ─ public ─
    routerB ─ hostB, the public side's default route into "beyond"."""

    def __init__(self, nat, block_udp=False):
        tag = uuid.uuid4().hex[:6]
        self.ns = {k: f"p2pbench{k}-{tag}" for k in ("public", "router_a", "router_b", "host_a", "host_b",
                                                     "beyond")}
        try:
            self._build(nat, block_udp)
        except Exception:
            self.close()
            raise

    def _ip(self, *args):
        subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL)

    def _build(self, nat, block_udp):
        n = self.ns
        for name in n.values():
            self._ip("netns", "add", name)
            self._ip("-n", name, "link", "set", "lo", "up")
        links = [(("public", "upa", "10.240.0.1/24"), ("router_a", "wan", "10.240.0.2/24")),
                 (("public", "upb", "10.241.0.1/24"), ("router_b", "wan", "10.241.0.2/24")),
                 (("router_a", "lan", "10.250.1.1/24"), ("host_a", "eth", "10.250.1.2/24")),
                 (("router_b", "lan", "10.250.2.1/24"), ("host_b", "eth", "10.250.2.2/24")),
                 (("public", "isp", "10.239.0.1/24"), ("beyond", "edge", "10.239.0.2/24"))]
        for (a, ia, aa), (b, ib, ab) in links:
            self._ip("link", "add", ia, "netns", n[a], "type", "veth", "peer", "name", ib, "netns", n[b])
            for ns, dev, addr in ((a, ia, aa), (b, ib, ab)):
                self._ip("-n", n[ns], "addr", "add", addr, "dev", dev)
                self._ip("-n", n[ns], "link", "set", dev, "up")
        for ns in ("public", "router_a", "router_b"):
            subprocess.run(["ip", "netns", "exec", n[ns], "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        for ns, via in (("router_a", "10.240.0.1"), ("router_b", "10.241.0.1"), ("host_a", "10.250.1.1"),
                        ("host_b", "10.250.2.1"), ("public", "10.239.0.2")):
            self._ip("-n", n[ns], "route", "add", "default", "via", via)
        flags = "random,fully-random" if nat == "symmetric" else ""
        drop_udp = 'iifname "lan" meta l4proto udp drop\n' if block_udp else ""
        rules = (f'table ip nat {{\nchain post {{ type nat hook postrouting priority srcnat; '
                 f'oifname "wan" masquerade {flags}; }}\n}}\n'
                 f'table inet filter {{\nchain fw {{ type filter hook forward priority 0; policy drop;\n'
                 f'{drop_udp}iifname "lan" accept\nct state established,related accept\n}}\n'
                 f'chain inp {{ type filter hook input priority 0; policy accept;\n'
                 f'iifname "wan" ct state new drop\n}}\n}}\n')
        for ns in ("router_a", "router_b"):
            subprocess.run(["ip", "netns", "exec", n[ns], "nft", "-f", "-"], input=rules, text=True, check=True)

    def exec(self, ns, args):
        return ["ip", "netns", "exec", self.ns[ns], *args]

    def close(self):
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


class LossyLink:
    """Two network namespaces joined by a veth pair; each side drops
    `percent` % of what it receives, as tests/it/netfaults.rs does."""

    def __init__(self, percent):
        tag = uuid.uuid4().hex[:6]
        self.ns = {k: f"p2pbench{k}-{tag}" for k in ("a", "b")}
        self.addr = {"a": "10.238.0.1", "b": "10.238.0.2"}
        try:
            for name in self.ns.values():
                subprocess.run(["ip", "netns", "add", name], check=True)
                subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "link", "add", "lossy", "netns", self.ns["a"], "type", "veth",
                            "peer", "name", "lossy", "netns", self.ns["b"]], check=True)
            rule = (f"table inet lossy {{\nchain in {{ type filter hook input priority 0; policy accept;\n"
                    f'iifname "lossy" numgen random mod 100 < {percent} drop\n}}\n}}\n')
            for k, name in self.ns.items():
                subprocess.run(["ip", "-n", name, "addr", "add", f"{self.addr[k]}/24", "dev", "lossy"], check=True)
                subprocess.run(["ip", "-n", name, "link", "set", "lossy", "up"], check=True)
                subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=rule, text=True, check=True)
        except Exception:
            self.close()
            raise

    def exec(self, side, args):
        return ["ip", "netns", "exec", self.ns[side], *args]

    def close(self):
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


class CappedStar:
    """A hub namespace and leaves, as tests/it/bandwidth.rs builds them: leaf
    k behind its own veth pair on 10.234.{k+1}.0/24 (hub .1, leaf .2), what
    the hub sends it shaped by a token bucket (a home router's: 10 kB burst,
    150 ms of queue)."""

    def __init__(self, rates):
        tag = uuid.uuid4().hex[:6]
        self.hub = f"p2pbenchH-{tag}"
        self.leaves = [f"p2pbenchL{k}-{tag}" for k in range(len(rates))]
        try:
            for ns in [self.hub, *self.leaves]:
                subprocess.run(["ip", "netns", "add", ns], check=True)
                subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            for k, (leaf, rate) in enumerate(zip(self.leaves, rates)):
                dev = f"leaf{k}"
                subprocess.run(["ip", "link", "add", dev, "netns", self.hub, "type", "veth",
                                "peer", "name", "eth0", "netns", leaf], check=True)
                for ns, d, addr in ((self.hub, dev, self.hub_addr(k)), (leaf, "eth0", f"10.234.{k + 1}.2")):
                    subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", d], check=True)
                    subprocess.run(["ip", "-n", ns, "link", "set", d, "up"], check=True)
                subprocess.run(["ip", "netns", "exec", self.hub, "tc", "qdisc", "replace", "dev", dev, "root",
                                "tbf", "rate", rate, "burst", "10kb", "latency", "150ms"], check=True)
        except Exception:
            self.close()
            raise

    @staticmethod
    def hub_addr(k):
        return f"10.234.{k + 1}.1"

    def exec(self, ns, args):
        return ["ip", "netns", "exec", ns, *args]

    def close(self):
        for ns in [self.hub, *self.leaves]:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def video_window(path, secs):
    """(fps, bit/s, longest gap in s, width) of a recording's video over its
    last `secs` seconds, from ffprobe's packet list."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,size", "-of", "csv=p=0", path],
                         capture_output=True, text=True, timeout=60).stdout
    pkts = []
    for line in out.splitlines():
        parts = line.split(",")
        try:
            pkts.append((float(parts[0]), int(parts[1])))
        except (ValueError, IndexError):
            continue
    if not pkts:
        raise RuntimeError(f"no video in {path}")
    pkts.sort()
    end = pkts[-1][0]
    start = end - secs
    win = [p for p in pkts if p[0] >= start]
    times = [start] + [t for t, _ in win] + [end]
    gap = max(b - a for a, b in zip(times, times[1:]))
    # The width most frames of the window had (the stream header names the
    # first key frame's, which is the layer a receiver started on).
    frames = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "frame=pts_time,width", "-of", "csv=p=0", path],
                            capture_output=True, text=True, timeout=120).stdout
    widths = {}
    for line in frames.splitlines():
        parts = line.split(",")
        try:
            t, w = float(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            continue
        if t >= start:
            widths[w] = widths.get(w, 0) + 1
    width = str(max(widths, key=widths.get)) if widths else "?"
    return len(win) / secs, sum(n for _, n in win) * 8 / secs, gap, width


class Bench:
    def __init__(self, args):
        self.a = args
        self.quick = args.quick
        self.p2p = args.p2p
        self.loadgen = args.loadgen
        self.wan = args.wan
        self.tmp = tempfile.mkdtemp(prefix="p2p-bench-")
        self.rows = []  # (figure, measure, value, baseline, ratio, target, note)
        self.missing = []  # (figure, reason)
        self.raw = {}
        self.notes = []

    # ------------------------------------------------------------ helpers

    def row(self, fig, measure, value, unit, baseline=None, ratio=None, target="", met=None):
        self.rows.append(
            dict(fig=fig, measure=measure, value=value, unit=unit, baseline=baseline,
                 ratio=ratio, target=target, met=met)
        )

    def relay(self):
        # The load generators are one address standing for many clients:
        # no per-address cap.
        p = spawn([self.p2p, "signal", "--listen", "127.0.0.1:0", "-q", "--max-per-ip", "0"],
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = p.stdout.readline().strip()
        if not url.startswith("ws://"):
            stop(p)
            raise RuntimeError(f"relay printed {url!r}")
        return p, url

    def nats(self):
        port = free_port()
        p = spawn(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "nats-server")
        return p, f"nats://127.0.0.1:{port}"

    def run_json(self, args, timeout, **kw):
        p = spawn(args, stdout=subprocess.PIPE, text=True, **kw)
        try:
            out, _ = p.communicate(timeout=timeout)
        finally:
            stop(p)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} exited {p.returncode}")
        return json.loads(out.strip().splitlines()[-1])

    def figure(self, name, fn):
        t0 = time.time()
        log(f"{name} …")
        try:
            fn()
        except Exception as e:  # one figure failing must not hide the others
            traceback.print_exc()
            self.missing.append((name, f"failed: {e}"))
        finally:
            cleanup()
        log(f"{name} done in {time.time() - t0:.0f}s")

    # ------------------------------------------------------------ (4) data

    def data_channel(self):
        mb = self.a.data_mb
        nbytes = mb * 1_000_000
        runs = 1 if self.quick else 3
        _, url = self.relay()
        p2p_rates, tcp_rates, lib_rates, send_cpu = [], [], [], []
        p2p_e2e, tcp_e2e = [], []  # MB/s from the sender's start to the receiver's exit
        for i in range(runs):
            # p2p: head | p2p send --binary  ⇢  p2p receive --binary | sink
            room = f"bin-{uuid.uuid4().hex[:8]}"
            recv = spawn([self.p2p, "receive", "--binary", "--room", room, "--signal", url, "-q"],
                         stdout=subprocess.PIPE)
            sink = spawn([self.loadgen, "sink"], stdin=recv.stdout, stdout=subprocess.PIPE, text=True)
            recv.stdout.close()
            src = spawn(["head", "-c", str(nbytes), "/dev/zero"], stdout=subprocess.PIPE)
            t0 = time.monotonic()
            send = spawn([self.p2p, "send", "--binary", "--room", room, "--signal", url, "-q"],
                         stdin=src.stdout)
            src.stdout.close()
            out, _ = sink.communicate(timeout=240)
            recv.wait(timeout=60)
            p2p_e2e.append(mb / (time.monotonic() - t0))
            r = json.loads(out)
            if r["bytes"] != nbytes:
                raise RuntimeError(f"p2p delivered {r['bytes']} of {nbytes} bytes")
            p2p_rates.append(r["mb_per_s"])
            # The sender's CPU for the whole transfer, from its own exit.
            _, status, ru = os.wait4(send.pid, 0)
            send.returncode = os.waitstatus_to_exitcode(status)
            send_cpu.append((ru.ru_utime + ru.ru_stime) / mb)
            for p in (send, recv, src, sink):
                stop(p)
            # baseline: head | socat → TCP loopback → socat | sink
            port = free_port()
            lst = spawn(["socat", "-u", "-b", "262144", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "STDOUT"],
                        stdout=subprocess.PIPE)
            sink = spawn([self.loadgen, "sink"], stdin=lst.stdout, stdout=subprocess.PIPE, text=True)
            lst.stdout.close()
            src = spawn(["head", "-c", str(nbytes), "/dev/zero"], stdout=subprocess.PIPE)
            t0 = time.monotonic()
            cli = spawn(["socat", "-u", "-b", "262144", "STDIN", f"TCP:127.0.0.1:{port},retry=100,interval=0.02"],
                        stdin=src.stdout)
            src.stdout.close()
            out, _ = sink.communicate(timeout=120)
            lst.wait(timeout=60)
            tcp_e2e.append(mb / (time.monotonic() - t0))
            r = json.loads(out)
            if r["bytes"] != nbytes:
                raise RuntimeError(f"socat delivered {r['bytes']} of {nbytes} bytes")
            tcp_rates.append(r["mb_per_s"])
            for p in (cli, lst, src, sink):
                stop(p)
            lib_rates.append(self.webrtc_rs_alone(mb))
            log(f"  run {i + 1}: p2p {p2p_rates[-1]:.0f} MB/s, tcp {tcp_rates[-1]:.0f} MB/s, "
                f"webrtc-rs alone {lib_rates[-1]:.0f} MB/s")
        p, t, lib = median(p2p_rates), median(tcp_rates), median(lib_rates)
        self.raw["data_throughput"] = dict(p2p_mb_s=p2p_rates, tcp_mb_s=tcp_rates,
                                           webrtc_rs_mb_s=lib_rates, mb=mb)
        self.row("4 data", f"`--binary` throughput, {mb} MB (median of {runs})",
                 f"{p:.0f} MB/s = {p * 8 / 1000:.2f} Gbit/s", "",
                 baseline=f"{t:.0f} MB/s = {t * 8 / 1000:.2f} Gbit/s (socat TCP loopback)",
                 ratio=p / t, target="≥ 1 Gbit/s", met=p * 8 / 1000 >= 1.0)
        pe, te = median(p2p_e2e), median(tcp_e2e)
        self.raw["data_throughput"].update(p2p_end_to_end_mb_s=p2p_e2e, tcp_end_to_end_mb_s=tcp_e2e)
        self.row("4 data", f"the same {mb} MB end to end: from the sender's start to the receiver's exit "
                 "(connect and end of stream included, median)",
                 f"{pe:.0f} MB/s", "", baseline=f"{te:.0f} MB/s (socat TCP loopback, to the listener's exit)",
                 ratio=pe / te, target="≥ 0.3×", met=pe / te >= 0.3)
        self.row("4 data", "sender CPU per MB (user + system, whole process, median)",
                 f"{median(send_cpu) * 1000:.1f} ms/MB", "")
        self.raw["data_throughput"]["send_cpu_s_per_mb"] = send_cpu
        self.row("4 data", f"the same {mb} MB through webrtc-rs 0.21 alone with p2p's settings (examples/dc_loopback, "
                 "two processes, no p2p code)", f"{lib:.0f} MB/s", "",
                 baseline=f"{p:.0f} MB/s (p2p, above)", ratio=lib / p)

        self.data_over_loss()
        self.pipe_end(url)
        self.data_at_round_trips()

        # small messages: one-way latency, lines stamped with the send time
        count = 500 if self.quick else 2000
        rate = 200
        room = f"lat-{uuid.uuid4().hex[:8]}"
        go = os.path.join(self.tmp, f"{room}.go")
        ev = os.path.join(self.tmp, f"{room}.events")
        recv = spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q"],
                     stdout=subprocess.PIPE)
        sink = spawn([self.loadgen, "lines-sink", "--count", str(count), "--skip", "0"],
                     stdin=recv.stdout, stdout=subprocess.PIPE, text=True)
        recv.stdout.close()
        src = spawn([self.loadgen, "lines-src", "--count", str(count), "--rate", str(rate),
                     "--size", "64", "--wait-file", go], stdout=subprocess.PIPE)
        send = spawn([self.p2p, "send", "--room", room, "--signal", url, "-q",
                      "--events-file", ev], stdin=src.stdout)
        src.stdout.close()
        wait_for(lambda: any(e.get("event") == "channel" for e in read_events(ev)), 30,
                 "the data channel")
        time.sleep(0.2)
        open(go, "w").close()
        out, _ = sink.communicate(timeout=count / rate + 60)
        r = json.loads(out)
        for p in (send, src, recv, sink):
            stop(p)
        if r["received"] < count:
            raise RuntimeError(f"latency: {r['received']} of {count} lines arrived")
        # baseline: the same lines through socat over TCP loopback
        port = free_port()
        lst = spawn(["socat", "-u", "-b", "262144", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "STDOUT"],
                    stdout=subprocess.PIPE)
        sink = spawn([self.loadgen, "lines-sink", "--count", str(count)],
                     stdin=lst.stdout, stdout=subprocess.PIPE, text=True)
        lst.stdout.close()
        src = spawn([self.loadgen, "lines-src", "--count", str(count), "--rate", str(rate),
                     "--size", "64"], stdout=subprocess.PIPE)
        cli = spawn(["socat", "-u", "-b", "262144", "STDIN", f"TCP:127.0.0.1:{port},retry=100,interval=0.02"],
                    stdin=src.stdout)
        src.stdout.close()
        out, _ = sink.communicate(timeout=count / rate + 60)
        b = json.loads(out)
        for p in (cli, src, lst, sink):
            stop(p)
        self.raw["data_latency"] = dict(p2p=r, tcp=b, count=count, rate=rate)
        self.row("4 data", f"64-byte line one-way latency p50 ({count} lines at {rate}/s)",
                 f"{r['p50_ms']:.2f} ms", "", baseline=f"{b['p50_ms']:.2f} ms (socat)",
                 ratio=r["p50_ms"] / max(b["p50_ms"], 1e-6), target="p50 ≤ 1 ms",
                 met=r["p50_ms"] <= 1.0)
        self.row("4 data", "64-byte line one-way latency p99",
                 f"{r['p99_ms']:.2f} ms", "", baseline=f"{b['p99_ms']:.2f} ms (socat)",
                 ratio=r["p99_ms"] / max(b["p99_ms"], 1e-6))

    def data_over_loss(self):
        """`--binary` through a link that drops 5 % of packets each way
        (everything: signaling, data and acknowledgements), next to TCP
        through the same link."""
        mb = 20 if self.quick else 50
        nbytes = mb * 1_000_000
        net = LossyLink(5)
        mine = []  # the figure's own processes: the caller's relay lives on

        def run(args, **kw):
            p = spawn(args, **kw)
            mine.append(p)
            return p

        try:
            a, b = net.addr["a"], net.addr["b"]
            relay = run(net.exec("a", [self.p2p, "signal", "--listen", f"{a}:0", "-q"]),
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            url = relay.stdout.readline().strip()
            room = f"loss-{uuid.uuid4().hex[:8]}"
            recv = run(net.exec("b", [self.p2p, "receive", "--binary", "--room", room, "--signal", url, "-q"]),
                       stdout=subprocess.PIPE)
            sink = run([self.loadgen, "sink"], stdin=recv.stdout, stdout=subprocess.PIPE, text=True)
            recv.stdout.close()
            src = run(["head", "-c", str(nbytes), "/dev/urandom"], stdout=subprocess.PIPE)
            run(net.exec("a", [self.p2p, "send", "--binary", "--room", room, "--signal", url, "-q"]),
                stdin=src.stdout)
            src.stdout.close()
            out, _ = sink.communicate(timeout=600)
            p2p = json.loads(out)
            if p2p["bytes"] != nbytes:
                raise RuntimeError(f"over loss, p2p delivered {p2p['bytes']} of {nbytes} bytes")
            for p in mine:
                stop(p)
            port = free_port()
            lst = run(net.exec("b", ["socat", "-u", "-b", "262144", f"TCP-LISTEN:{port},bind={b},reuseaddr",
                                     "STDOUT"]), stdout=subprocess.PIPE)
            sink = run([self.loadgen, "sink"], stdin=lst.stdout, stdout=subprocess.PIPE, text=True)
            lst.stdout.close()
            src = run(["head", "-c", str(nbytes), "/dev/urandom"], stdout=subprocess.PIPE)
            run(net.exec("a", ["socat", "-u", "-b", "262144", "STDIN",
                               f"TCP:{b}:{port},retry=100,interval=0.02"]), stdin=src.stdout)
            src.stdout.close()
            out, _ = sink.communicate(timeout=600)
            tcp = json.loads(out)
            if tcp["bytes"] != nbytes:
                raise RuntimeError(f"over loss, socat delivered {tcp['bytes']} of {nbytes} bytes")
        finally:
            for p in mine:
                stop(p)
            net.close()
        self.raw["data_over_loss"] = dict(p2p=p2p, tcp=tcp, mb=mb, loss_percent=5)
        log(f"  5 % loss: p2p {p2p['mb_per_s']:.1f} MB/s, tcp {tcp['mb_per_s']:.1f} MB/s")
        self.row("4 data", f"`--binary` throughput through 5 % loss each way, {mb} MB (two namespaces, nftables)",
                 f"{p2p['mb_per_s']:.1f} MB/s", "",
                 baseline=f"{tcp['mb_per_s']:.1f} MB/s (socat TCP, same link)",
                 ratio=p2p["mb_per_s"] / tcp["mb_per_s"])

    def data_at_round_trips(self):
        """`--binary` between two namespaces whose packets examples/wan.rs
        holds for a round trip of 20, 50 and 150 ms (no loss, no cap), next
        to TCP (socat) over the same path: what SCTP's windows and the
        user-space link leave. Timed from the sender's start to the
        receiver's exit, connect included."""
        rtts = [50] if self.quick else [20, 50, 150]
        mb = 20 if self.quick else 50
        nbytes = mb * 1_000_000
        runs = 1 if self.quick else 3
        figures = {}
        for rtt in rtts:
            # The figure swings run to run (how far slow start overshoots
            # the link's queue): the median of a few runs.
            got = [self.data_at_round_trip(rtt, nbytes) for _ in range(runs)]
            p = median([mb / secs for secs, _ in got])
            t = median([mb / secs for _, secs in got])
            figures[rtt] = dict(p2p_mb_s=p, tcp_mb_s=t, runs=[(mb / a, mb / b) for a, b in got])
            log(f"  {rtt} ms round trip: p2p {p:.1f} MB/s, tcp {t:.1f} MB/s")
            all_p2p = "/".join(f"{mb / a:.1f}" for a, _ in got)
            self.row("4 data", f"`--binary` {mb} MB at a {rtt} ms round trip (examples/wan.rs, no loss), "
                     f"sender's start to receiver's exit (median of {runs}: {all_p2p})", f"{p:.1f} MB/s", "",
                     baseline=f"{t:.1f} MB/s (socat TCP, same path)", ratio=p / t,
                     target="≥ 0.5× at 50 ms" if rtt == 50 else "",
                     met=(p / t >= 0.5) if rtt == 50 else None)
        self.raw["data_at_round_trips"] = dict(mb=mb, figures=figures)

    def data_at_round_trip(self, rtt, nbytes):
        """One run at `rtt`: seconds for p2p, then for TCP."""
        side = f"delay:{rtt / 4:g}ms"
        star = matrix.WanStar(2, self.wan, {0: side, 1: side})
        mine = []

        def run(args, **kw):
            p = spawn(args, **kw)
            mine.append(p)
            return p

        def timed(send_args, reader, sink, what):
            """Seconds from the sending side's start until `reader` (the
            receiving side, piped into `sink`) exits with every byte."""
            src = run(["head", "-c", str(nbytes), "/dev/urandom"], stdout=subprocess.PIPE)
            t0 = time.monotonic()
            run(send_args, stdin=src.stdout)
            src.stdout.close()
            out, _ = sink.communicate(timeout=600)
            reader.wait(timeout=60)
            secs = time.monotonic() - t0
            got = json.loads(out)["bytes"]
            if got != nbytes:
                raise RuntimeError(f"at {rtt} ms, {what} delivered {got} of {nbytes} bytes")
            return secs

        try:
            a, b = star.leaf_addr(0), star.leaf_addr(1)
            relay = run(star.exec(star.leaves[0], [self.p2p, "signal", "--listen", f"{a}:0", "-q"]),
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            url = relay.stdout.readline().strip()
            room = f"rtt-{uuid.uuid4().hex[:8]}"
            recv = run(star.exec(star.leaves[1], [self.p2p, "receive", "--binary", "--room", room,
                                                  "--signal", url, "-q"]), stdout=subprocess.PIPE)
            sink = run([self.loadgen, "sink"], stdin=recv.stdout, stdout=subprocess.PIPE, text=True)
            recv.stdout.close()
            time.sleep(1.0)  # the receiver waits in the room
            p2p_secs = timed(star.exec(star.leaves[0], [self.p2p, "send", "--binary", "--room", room,
                                                        "--signal", url, "-q"]), recv, sink, "p2p")
            for p in mine:
                stop(p)
            port = free_port()
            lst = run(star.exec(star.leaves[1], ["socat", "-u", "-b", "262144",
                                                 f"TCP-LISTEN:{port},bind={b},reuseaddr", "STDOUT"]),
                      stdout=subprocess.PIPE)
            sink = run([self.loadgen, "sink"], stdin=lst.stdout, stdout=subprocess.PIPE, text=True)
            lst.stdout.close()
            time.sleep(0.3)
            tcp_secs = timed(star.exec(star.leaves[0], ["socat", "-u", "-b", "262144", "STDIN",
                                                        f"TCP:{b}:{port},retry=100,interval=0.02"]),
                             lst, sink, "socat")
        finally:
            for p in mine:
                stop(p)
            star.close()
        return p2p_secs, tcp_secs

    def pipe_end(self, url):
        """`head -c 1024 | p2p send --binary` to a `p2p receive --binary`
        already waiting: how long from the sender's start until each process
        exits, connect included. Baseline: the same kilobyte through socat
        over TCP loopback, to the listener's exit."""
        runs = 3 if self.quick else 10
        payload = os.path.join(self.tmp, "pipe-1k")
        with open(payload, "wb") as f:
            f.write(os.urandom(1024))
        recv_ms, send_ms, tcp_ms = [], [], []
        for _ in range(runs):
            room = f"pipe-{uuid.uuid4().hex[:8]}"
            recv = spawn([self.p2p, "receive", "--binary", "--room", room, "--signal", url, "-q"],
                         stdout=subprocess.PIPE)
            time.sleep(0.5)  # waiting in the room, as a user's receiver would be
            with open(payload, "rb") as stdin:
                t0 = time.monotonic()
                send = spawn([self.p2p, "send", "--binary", "--room", room, "--signal", url, "-q"],
                             stdin=stdin)
            out, _ = recv.communicate(timeout=60)
            recv_ms.append((time.monotonic() - t0) * 1000)
            send.wait(timeout=60)
            send_ms.append((time.monotonic() - t0) * 1000)
            if len(out) != 1024:
                raise RuntimeError(f"pipe end: the receiver wrote {len(out)} of 1024 bytes")
            port = free_port()
            lst = spawn(["socat", "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "STDOUT"],
                        stdout=subprocess.PIPE)
            time.sleep(0.2)
            with open(payload, "rb") as stdin:
                t0 = time.monotonic()
                cli = spawn(["socat", "-u", "STDIN", f"TCP:127.0.0.1:{port},retry=100,interval=0.02"],
                            stdin=stdin)
            lst.communicate(timeout=30)
            tcp_ms.append((time.monotonic() - t0) * 1000)
            stop(cli)
        self.raw["pipe_end"] = dict(receiver_ms=recv_ms, sender_ms=send_ms, tcp_ms=tcp_ms)
        r, s, t = median(recv_ms), median(send_ms), median(tcp_ms)
        log(f"  1 KB pipe: receiver exits at {r:.0f} ms, sender at {s:.0f} ms, socat at {t:.1f} ms")
        self.row("4 data", f"1 KB pipe: from the sender's start to the receiver's exit, connect included "
                 f"(median of {runs})", f"{r:.0f} ms", "", baseline=f"{t:.1f} ms (socat TCP loopback)",
                 ratio=r / max(t, 1e-3), target="≤ 300 ms", met=r <= 300)
        self.row("4 data", "1 KB pipe: to the sender's exit", f"{s:.0f} ms", "",
                 target="≤ 300 ms", met=s <= 300)

    def webrtc_rs_alone(self, mb):
        """The library's own ceiling: two processes, one detached data
        channel, SDP swapped through files, no relay and no p2p code."""
        d = tempfile.mkdtemp(dir=self.tmp)
        env = dict(os.environ, MB=str(mb))
        recv = spawn([self.a.dc_loopback, "recv", d], env=env, stdout=subprocess.PIPE, text=True)
        send = spawn([self.a.dc_loopback, "send", d], env=env, stdout=subprocess.DEVNULL)
        out, _ = recv.communicate(timeout=240)
        stop(send)
        m = re.search(r"received (\d+) MB in [\d.]+ s: ([\d.]+) MB/s", out)
        if not m or int(m.group(1)) != mb:
            raise RuntimeError(f"dc_loopback: {out.strip()!r}")
        return float(m.group(2))

    # ------------------------------------------------------------ (5) relay

    def relay_throughput(self):
        secs = 3 if self.quick else 10
        runs = 1 if self.quick else 3
        res = {"p2p": [], "nats": []}
        for i in range(runs):
            relay, url = self.relay()
            res["p2p"].append(self.run_json(
                [self.loadgen, "relay", "--url", url, "--conns", "100", "--room-size", "10",
                 "--size", "200", "--secs", str(secs)], timeout=secs + 60))
            stop(relay)
            nats, nurl = self.nats()
            res["nats"].append(self.run_json(
                [self.loadgen, "nats", "--url", nurl, "--conns", "100", "--room-size", "10",
                 "--size", "200", "--secs", str(secs)], timeout=secs + 60))
            stop(nats)
            log(f"  run {i + 1}: relay {res['p2p'][-1]['msgs_per_s']:.0f}/s "
                f"p99 {res['p2p'][-1]['p99_ms']:.1f} ms, nats {res['nats'][-1]['msgs_per_s']:.0f}/s "
                f"p99 {res['nats'][-1]['p99_ms']:.1f} ms")
        self.raw["relay_throughput"] = res
        for r in res["p2p"] + res["nats"]:
            if r["delivered"] == 0 or r["errors"]:
                raise RuntimeError(f"{r['backend']}: {r['delivered']} delivered, {r['errors']} errors")
        p = median([r["msgs_per_s"] for r in res["p2p"]])
        n = median([r["msgs_per_s"] for r in res["nats"]])
        pl = median([r["p99_ms"] for r in res["p2p"]])
        nl = median([r["p99_ms"] for r in res["nats"]])
        self.row("5 relay", f"delivered msg/s, 100 conns, rooms of 10, 200 B, {secs} s (median of {runs})",
                 f"{p:,.0f}/s", "", baseline=f"{n:,.0f}/s (nats-server)", ratio=p / n,
                 target="≥ 200k/s", met=p >= 200_000)
        self.row("5 relay", "p99 delivery latency (same run, ≤ 8 msgs in flight per sender)",
                 f"{pl:.1f} ms", "", baseline=f"{nl:.1f} ms (nats-server)", ratio=pl / max(nl, 1e-6))

        self.relay_flood(3 if self.quick else 10, runs)

        n_idle = 1000 if self.quick else 10000
        relay, url = self.relay()
        r = self.run_json([self.loadgen, "idle-ws", "--url", url, "--conns", str(n_idle),
                           "--pid", str(relay.pid)], timeout=300)
        stop(relay)
        nats, nurl = self.nats()
        b = self.run_json([self.loadgen, "idle-nats", "--url", nurl, "--conns", str(n_idle),
                           "--pid", str(nats.pid)], timeout=300)
        stop(nats)
        self.raw["relay_idle"] = dict(p2p=r, nats=b)
        for x in (r, b):
            if x["failed"]:
                raise RuntimeError(f"{x['backend']}: {x['failed']} idle connections failed: {x['first_error']}")
        self.row("5 relay", f"RSS with {n_idle:,} idle subscribed connections",
                 f"{r['rss_kb'] / 1024:.0f} MB ({r['kb_per_conn']:.1f} KB/conn)", "",
                 baseline=f"{b['rss_kb'] / 1024:.0f} MB ({b['kb_per_conn']:.1f} KB/conn, nats-server)",
                 ratio=r["rss_kb"] / b["rss_kb"],
                 target="10k conns ≤ 200 MB",
                 # at 10k, the RSS itself; with fewer (--quick), the
                 # per-connection cost that 10k would multiply
                 met=(r["rss_kb"] / 1024 <= 200 if n_idle >= 10000 else r["kb_per_conn"] <= 20.48))

    def relay_flood(self, secs, runs):
        """Issue 8: what one client flooding the relay does to the others' latency.

        100 well-behaved clients (rooms of 10) send 20 msgs/s each, open loop;
        their p99 emit → delivery latency is measured without and with one more
        client (`loadgen flood`) writing `emit` frames into room r0 as fast as
        the relay reads them. The relay's rate limit (1,000 frames/s per
        connection) lets 1,000/s of the flood through to r0's 10 clients and
        drops the rest unread."""
        rate, conns = 20, 100
        res = {"quiet": [], "flooded": [], "flood": []}

        def clients(url):
            return self.run_json(
                [self.loadgen, "relay", "--url", url, "--conns", str(conns), "--room-size", "10",
                 "--size", "200", "--secs", str(secs), "--rate", str(rate)], timeout=secs + 60)

        for i in range(runs):
            relay, url = self.relay()
            res["quiet"].append(clients(url))
            stop(relay)
            relay, url = self.relay()
            # Outlasts the clients' connect + 1 s warm-up + window.
            flood = spawn([self.loadgen, "flood", "--url", url, "--ns", "bench,r0", "--size", "200",
                           "--secs", str(secs + 4)], stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            res["flooded"].append(clients(url))
            out, _ = flood.communicate(timeout=30)
            stop(flood)
            stop(relay)
            if flood.returncode != 0:
                raise RuntimeError(f"loadgen flood exited {flood.returncode}")
            res["flood"].append(json.loads(out.strip().splitlines()[-1]))
            q, f, fl = res["quiet"][-1], res["flooded"][-1], res["flood"][-1]
            log(f"  flood run {i + 1}: p99 {q['p99_ms']:.2f} ms quiet, {f['p99_ms']:.2f} ms flooded "
                f"(p50 {q['p50_ms']:.2f} / {f['p50_ms']:.2f} ms; flood offered "
                f"{fl['frames_per_s']:,.0f} frames/s, relay dropped {fl['relay_dropped']:,})")
        self.raw["relay_flood"] = res
        for r in res["quiet"] + res["flooded"]:
            if r["delivered"] == 0 or r["errors"]:
                raise RuntimeError(f"flood figure: {r['delivered']} delivered, {r['errors']} errors")
        expected = conns * rate * 9 * secs
        for r in res["flooded"]:
            if r["delivered"] < 0.95 * expected:
                raise RuntimeError(f"flooded: only {r['delivered']} of ~{expected} messages delivered")
        ql = median([r["p99_ms"] for r in res["quiet"]])
        fl = median([r["p99_ms"] for r in res["flooded"]])
        offered = median([r["frames_per_s"] for r in res["flood"]])
        self.row("5 relay", f"p99 delivery latency of {conns} clients at {rate} msgs/s each (rooms of 10) "
                 f"while one more client floods room r0 ({offered / 1e6:.1f}M frames/s offered; "
                 f"median of {runs})",
                 f"{fl:.2f} ms", "", baseline=f"{ql:.2f} ms (same clients, no flood)",
                 ratio=fl / max(ql, 1e-6))
        qm = median([r["p50_ms"] for r in res["quiet"]])
        fm = median([r["p50_ms"] for r in res["flooded"]])
        self.row("5 relay", "p50 delivery latency, same clients, flooded vs quiet",
                 f"{fm:.2f} ms", "", baseline=f"{qm:.2f} ms (same clients, no flood)",
                 ratio=fm / max(qm, 1e-6))

    # ------------------------------------------------------------ (1) time to media

    def time_to_media(self):
        runs = 3 if self.quick else 10
        relay, url = self.relay()
        room = f"ttm-{uuid.uuid4().hex[:8]}"
        sev = os.path.join(self.tmp, f"{room}.sender")
        sender = spawn([self.p2p, "send", "--test-source", "--room", room, "--signal", url,
                        "-q", "--events-file", sev], stdin=subprocess.DEVNULL)
        wait_for(lambda: any(e.get("event") == "start" for e in read_events(sev)), 30, "sender start")
        time.sleep(2)  # the encoder is running before the first receiver comes
        rows = []
        for i in range(runs):
            ev = os.path.join(self.tmp, f"{room}.r{i}")
            rec = os.path.join(self.tmp, f"{room}.r{i}.webm")
            t_spawn = time.time() * 1000
            recv = spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q",
                          "--record", rec, "--events-file", ev], stdout=subprocess.DEVNULL)
            evs = wait_for(lambda: (lambda e: e if any(x.get("event") == "keyframe" for x in e) else None)(read_events(ev)),
                           30, "first key frame")
            stop(recv)
            first = {}
            for e in evs:
                k = e.get("event")
                if k == "track":
                    k = f"track-{e.get('kind')}"
                    first.setdefault("track", e["ts"])
                first.setdefault(k, e["ts"])
            row = dict(start=first["start"] - t_spawn, connect=first["connect"] - t_spawn,
                       track=first["track"] - t_spawn,
                       video=first.get("track-video", float("nan")) - t_spawn,
                       keyframe=first["keyframe"] - t_spawn)
            rows.append(row)
            log("  run %d: " % (i + 1) + ", ".join(f"{k} {v:.0f} ms" for k, v in row.items()))
            # the sender sees this receiver leave before the next one comes
            wait_for(lambda: sum(1 for e in read_events(sev) if e.get("event") == "dispose") > i,
                     30, "the sender to drop the receiver")
            time.sleep(0.3)
        # A browser watching the same sender: our page's library (web/p2p.js)
        # in headless Chromium, timed inside the page from its start.
        watch, watch_why = None, None
        try:
            watch = self.run_json(["node", os.path.join(ROOT, "bench", "chromium_ttm.mjs"), "--p2p", self.p2p,
                                   "--role", "receive", "--signal", url, "--room", room, "--runs", str(runs)],
                                  timeout=60 + 15 * runs)
            self.raw["time_to_media_chromium_watching_p2p"] = watch
        except Exception as e:  # the other rows stand without this one
            traceback.print_exc()
            watch_why = f"failed: {e}"
            self.missing.append(("1 time to media, Chromium watching p2p send", watch_why))
        stop(sender)
        stop(relay)
        self.raw["time_to_media"] = rows
        m = {k: median([r[k] for r in rows]) for k in rows[0]}

        # Baseline: the same between two pages of our browser app in headless
        # Chromium (bench/chromium_ttm.mjs; how and why in bench/NOTES.md).
        c, why = {}, None
        try:
            res = self.run_json(["node", os.path.join(ROOT, "bench", "chromium_ttm.mjs"),
                                 "--p2p", self.p2p, "--runs", str(runs)], timeout=60 + 15 * runs)
            self.raw["time_to_media_chromium"] = res
            c = {k: median([r[k] for r in res["runs"]]) for k in ("connect", "rtp", "decoded")}
            log("  chromium: " + ", ".join(f"{k} {v:.0f} ms" for k, v in c.items()))
        except Exception as e:  # the p2p rows stand without their baseline
            traceback.print_exc()
            why = f"failed: {e}"
            self.missing.append(("1 time to media, Chromium baseline", why))

        def base(k, what):
            if k not in c:
                return f"not measured ({why})"
            return f"{c[k]:.0f} ms {what}"

        def ratio(p, k):
            return p / c[k] if c.get(k) else None

        label = f"median of {runs}, from spawning `p2p receive --record`"
        self.row("1 time to media", f"→ process up (`start` event) ({label})", f"{m['start']:.0f} ms", "")
        self.row("1 time to media", "→ ICE+DTLS connected (`connect`)", f"{m['connect']:.0f} ms", "",
                 baseline=base("connect", "(Chromium ↔ Chromium, connectionState `connected`)"),
                 ratio=ratio(m["connect"], "connect"))
        self.row("1 time to media", "→ first RTP packet (`track`)", f"{m['track']:.0f} ms", "",
                 baseline=base("rtp", "(Chromium, first remote track `unmute`)"),
                 ratio=ratio(m["track"], "rtp"), target="≤ 100 ms", met=m["track"] <= 100)
        kf = sorted(r["keyframe"] for r in rows)
        self.row("1 time to media", f"→ first key frame written (`keyframe`; all: {', '.join(f'{x:.0f}' for x in kf)})",
                 f"{m['keyframe']:.0f} ms", "",
                 baseline=base("decoded", "(Chromium, first video frame decoded)"),
                 ratio=ratio(m["keyframe"], "decoded"), target="≤ 60 ms", met=m["keyframe"] <= 60)
        if watch:
            w = [r["decoded"] for r in watch["runs"]]
            wm = median(w)
            self.row("1 time to media",
                     f"Chromium (our page's p2p.js) watching `p2p send`: first video frame decoded, from its start "
                     f"(median of {runs}; all: {', '.join(f'{x:.0f}' for x in sorted(w))})",
                     f"{wm:.0f} ms", "", baseline=base("decoded", "(Chromium watching Chromium)"),
                     ratio=ratio(wm, "decoded"), target="≤ 150 ms, every run < 300", met=wm <= 150 and max(w) < 300)

    # ------------------------------------------------------------ (8) constrained links

    def constrained_links(self):
        """Receivers behind 1 Mbit/s and 300 kbit/s links watching a 640x480
        zone plate asked for 2.5 Mbit/s: p2p send → p2p receive, next to
        Chromium → Chromium (our page) through the same links with the same
        picture (a .y4m of the same zone plate as Chromium's fake camera)."""
        caps = [("1 Mbit/s", "1mbit"), ("300 kbit/s", "300kbit")]
        settle, window = 12, 10
        y4m = os.path.join(self.tmp, "zone-plate.y4m")
        subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "pattern=zone-plate", "kt=4", "kx2=40", "ky2=40",
                        "num-buffers=150", "!", "video/x-raw,format=I420,width=640,height=480,framerate=30/1",
                        "!", "y4menc", "!", "filesink", f"location={y4m}"], check=True, timeout=120)
        star = CappedStar([rate for _, rate in caps])
        p2p, chromium = [], []
        try:
            relay = spawn(star.exec(star.hub, [self.p2p, "signal", "--listen", "0.0.0.0:0", "-q"]),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            port = relay.stdout.readline().strip().rsplit(":", 1)[-1]
            room = f"cap-{uuid.uuid4().hex[:8]}"
            # P2P_BENCH_LOG=file keeps the sender's debug log (its layer
            # switches and probes) for a look at a figure that moved.
            sender_log = os.environ.get("P2P_BENCH_LOG")
            sender = spawn(star.exec(star.hub, [self.p2p, "send", "--test-source", "--test-pattern", "zone-plate",
                                                "--width", "640", "--height", "480", "--video-bitrate", "2500",
                                                "--room", room, "--signal", f"ws://127.0.0.1:{port}", "-q"]),
                           stdin=subprocess.DEVNULL,
                           stderr=open(sender_log, "w") if sender_log else None,
                           env=dict(os.environ, RUST_LOG="p2p=debug") if sender_log else None)
            recvs = []
            for k, leaf in enumerate(star.leaves):
                rec = os.path.join(self.tmp, f"{room}-{k}.webm")
                ev = os.path.join(self.tmp, f"{room}-{k}.events")
                recvs.append((spawn(star.exec(leaf, [self.p2p, "receive", "--room", room, "--record", rec,
                                                     "--signal", f"ws://{star.hub_addr(k)}:{port}", "-q",
                                                     "--events-file", ev]), stdout=subprocess.DEVNULL), rec, ev))
            time.sleep(settle + window)
            for proc, rec, ev in recvs:
                stop(proc, wait=15)
                fps, bps, gap, width = video_window(rec, window)
                lat = [e["latency_ms"]["p50"] for e in read_events(ev)
                       if e.get("event") == "stats" and e.get("latency_ms")]
                p2p.append(dict(fps=fps, bps=bps, gap=gap, width=width, latency_ms=lat[-1] if lat else None))
            stop(sender)
            # Chromium → Chromium: one publishing page in the hub, one
            # watching page per leaf.
            croom = room + "-c"
            pub = spawn(star.exec(star.hub, ["node", os.path.join(ROOT, "tests", "browser", "publish-page.mjs"),
                                             f"http://{star.hub_addr(0)}:{port}/?room={croom}&nick=cam",
                                             str((settle + window + 20) * 1000)]),
                        env=dict(os.environ, FAKE_VIDEO=y4m), stdout=subprocess.DEVNULL)
            time.sleep(3)
            viewers = [spawn(star.exec(leaf, ["node", os.path.join(ROOT, "tests", "browser", "watch-page.mjs"),
                                              f"http://{star.hub_addr(k)}:{port}/?room={croom}&nick=v{k}",
                                              str(settle * 1000), str(window * 1000)]),
                             stdout=subprocess.PIPE, text=True)
                       for k, leaf in enumerate(star.leaves)]
            for v in viewers:
                out, _ = v.communicate(timeout=180)
                r = json.loads(out.strip().splitlines()[-1])
                if "error" in r:
                    raise RuntimeError(f"Chromium viewer: {r['error']}")
                chromium.append(dict(fps=r["frames"] / window, bps=r["videoBps"], gap=r["maxGapMs"] / 1000,
                                     width=str(r["width"])))
            stop(pub)
        finally:
            cleanup()
            star.close()
        self.raw["constrained_links"] = dict(p2p=p2p, chromium=chromium, caps=[c for c, _ in caps])
        for (label, _), p, c in zip(caps, p2p, chromium):
            log(f"  {label}: p2p {p}, Chromium {c}")
            lat = f", glass→receiver p50 {p['latency_ms']:.0f} ms" if p["latency_ms"] is not None else ""
            self.row("8 constrained links", f"behind {label}: frames/s over the last {window} s "
                     f"(after {settle} s; p2p {p['width']} wide{lat})",
                     f"{p['fps']:.1f} fps", "",
                     baseline=f"{c['fps']:.1f} fps (Chromium → Chromium, {c['width']} wide)",
                     ratio=p["fps"] / c["fps"] if c["fps"] else None, target="≥ 15 fps" if "1 M" in label else "",
                     met=p["fps"] >= 15 if "1 M" in label else None)
            self.row("8 constrained links", f"behind {label}: longest freeze", f"{p['gap']:.2f} s", "",
                     baseline=f"{c['gap']:.2f} s (Chromium → Chromium)",
                     ratio=p["gap"] / c["gap"] if c["gap"] else None, target="≤ 0.5 s", met=p["gap"] <= 0.5)
            self.row("8 constrained links", f"behind {label}: video received", f"{p['bps'] / 1000:.0f} kbit/s", "",
                     baseline=f"{c['bps'] / 1000:.0f} kbit/s (Chromium → Chromium)",
                     ratio=p["bps"] / c["bps"] if c["bps"] else None)

    # ------------------------------------------------------------ (7) across NATs

    def across_nats(self):
        """Time to connect across two NATs (the topology of tests/it/nat.rs),
        through Debian's coturn, p2p next to Chromium in the same topology with
        the same servers: both get them from the relay (`--turn-secret`)."""
        runs = 3 if self.quick else 10
        secret = uuid.uuid4().hex
        cases = [
            ("cone NATs, STUN", "cone", False, "stun:10.240.0.1:3478", False),
            ("symmetric NATs, TURN over UDP", "symmetric", False, "turn:10.240.0.1:3478", True),
            ("symmetric NATs, UDP dropped, TURN over TCP", "symmetric", True,
             "turn:10.240.0.1:3478?transport=tcp", True),
        ]
        self.raw["across_nats"] = {}
        for label, nat, block_udp, server, relayed in cases:
            net = Internet(nat, block_udp)
            try:
                conf = os.path.join(self.tmp, "turnserver.conf")
                with open(conf, "w") as f:
                    f.write("listening-ip=10.240.0.1\nrelay-ip=10.240.0.1\nlistening-port=3478\n"
                            f"realm=p2p.bench\nuse-auth-secret\nstatic-auth-secret={secret}\n"
                            f"fingerprint\nno-cli\nno-tls\nno-dtls\nuserdb={self.tmp}/turndb\n"
                            f"pidfile={self.tmp}/turnserver.pid\nlog-file=stdout\nsimple-log\n")
                spawn(net.exec("public", ["turnserver", "-c", conf]),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                relay = spawn(net.exec("public", [self.p2p, "signal", "--listen", "10.240.0.1:0", "-q",
                                                  "--turn-secret", secret, "--turn-url", server]),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                url = relay.stdout.readline().strip()
                room = f"nat-{uuid.uuid4().hex[:8]}"
                p2p = self.nat_connect_times(net, url, room, runs)
                chromium = self.nat_connect_times_chromium(net, url, room + "-c", runs)
            finally:
                cleanup()
                net.close()
            m = median([r["connect"] for r in p2p])
            c = median([r["connect"] for r in chromium])
            paths = sorted({r["path"] for r in p2p})
            self.raw["across_nats"][label] = dict(p2p=p2p, chromium=chromium)
            log(f"  {label}: p2p {m:.0f} ms ({', '.join(paths)}), Chromium {c:.0f} ms")
            ok = all(("relay" in r["path"]) == relayed for r in p2p)
            self.row("7 across NATs",
                     f"→ connected, {label} (median of {runs}, from spawning `p2p receive`; "
                     f"path {', '.join(paths)})",
                     f"{m:.0f} ms", "",
                     baseline=f"{c:.0f} ms (Chromium ↔ Chromium, same topology and servers)",
                     ratio=m / c if c else None,
                     target="relayed" if relayed else "direct", met=ok)

    def nat_connect_times(self, net, url, room, runs):
        sev = os.path.join(self.tmp, f"{room}.sender")
        spawn(net.exec("host_a", [self.p2p, "send", "--test-source", "--layers", "1", "--room", room,
                                  "--signal", url, "-q", "--events-file", sev]))
        wait_for(lambda: any(e.get("event") == "start" for e in read_events(sev)), 30, "sender start")
        time.sleep(2)
        rows = []
        for i in range(runs):
            ev = os.path.join(self.tmp, f"{room}.r{i}")
            t_spawn = time.time() * 1000
            recv = spawn(net.exec("host_b", [self.p2p, "receive", "--room", room, "--signal", url, "-q",
                                             "--events-file", ev]), stdout=subprocess.DEVNULL)
            evs = wait_for(lambda: (lambda e: e if any(x.get("event") == "connect" for x in e) else None)(
                read_events(ev)), 30, "connect across the NATs")
            stop(recv)
            c = next(e for e in evs if e.get("event") == "connect")
            path = c.get("path") or {}
            kind = f"{path.get('local', {}).get('type')}↔{path.get('remote', {}).get('type')}"
            rows.append(dict(connect=c["ts"] - t_spawn, path=kind))
            wait_for(lambda: sum(1 for e in read_events(sev) if e.get("event") == "dispose") > i,
                     30, "the sender to drop the receiver")
            time.sleep(0.3)
        return rows

    def nat_connect_times_chromium(self, net, url, room, runs):
        script = os.path.join(ROOT, "bench", "chromium_ttm.mjs")
        pub = spawn(net.exec("host_a", ["node", script, "--signal", url, "--room", room,
                                        "--role", "publish"]), stdout=subprocess.PIPE, text=True)
        line = pub.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"the Chromium publisher did not start: {line!r}")
        res = self.run_json(net.exec("host_b", ["node", script, "--signal", url, "--room", room,
                                                "--role", "receive", "--runs", str(runs)]),
                            timeout=60 + 20 * runs)
        stop(pub, signal.SIGTERM)
        return [dict(connect=r["connect"]) for r in res["runs"]]

    # ------------------------------------------------------------ (2) fan-out

    def fanout(self):
        secs = 3 if self.quick else 20
        levels = [1, 5, 10, 20]
        _, url = self.relay()
        room = f"fan-{uuid.uuid4().hex[:8]}"
        sev = os.path.join(self.tmp, f"{room}.sender")
        # a moving zone plate: the encoder spends most of the 1 Mbit/s (the
        # ball pattern needs ~0.13), so every receiver costs its full share
        # of packets
        sender = spawn([self.p2p, "send", "--test-source", "--test-pattern", "zone-plate", "--no-audio",
                        "--width", "640", "--height", "480", "--fps", "30", "--video-bitrate", "1000",
                        "--room", room, "--signal", url, "-q", "--events-file", sev])
        receivers = []
        cpu = {}
        bitrate = {}
        threads = {}

        def connected():
            stats = [e for e in read_events(sev) if e.get("event") == "stats"]
            return stats[-1].get("receivers", 0) if stats else 0

        for n in levels:
            while len(receivers) < n:
                receivers.append(spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q"],
                                       stdout=subprocess.DEVNULL))
            wait_for(lambda: connected() >= n, 60, f"{n} receivers", interval=0.2)
            time.sleep(2)
            c0, th0 = cpu_secs(sender.pid), thread_cpu(sender.pid)
            t0 = time.time()
            time.sleep(secs)
            c1, th1 = cpu_secs(sender.pid), thread_cpu(sender.pid)
            el = time.time() - t0
            cpu[n] = (c1 - c0) * secs / el
            threads[n] = {k: round(v - th0.get(k, 0.0), 2) for k, v in th1.items()
                          if v - th0.get(k, 0.0) > 0.05}
            stats = [e for e in read_events(sev) if e.get("event") == "stats"][-3:]
            bitrate[n] = median([e.get("media_bitrate", 0) for e in stats])
            log(f"  {n} receivers: {cpu[n]:.2f} CPU s over {secs} s, sender media bitrate {bitrate[n]}")
        self.raw["fanout"] = dict(secs=secs, cpu=cpu, sender_media_bitrate=bitrate, threads=threads)
        for n in levels:
            self.row("2 fan-out", f"sender CPU over {secs} s, 640×480@30 VP8 "
                     f"{bitrate[n] / 1e6:.2f} Mbit/s (moving zone plate), {n} receiver(s)",
                     f"{cpu[n]:.2f} s ({cpu[n] / secs * 100:.0f} % of a core)", "",
                     baseline=("" if n == 1 else f"{cpu[1]:.2f} s (1 receiver)"),
                     ratio=None if n == 1 else cpu[n] / cpu[1],
                     target="CPU(20)/CPU(1) ≤ 1.3" if n == 20 else "",
                     met=(cpu[20] / cpu[1] <= 1.3) if n == 20 else None)

    def fanout_layers(self):
        """Figure 2's sender with its receivers spread over the three layers:
        20 receivers, each in its own leaf of a CappedStar (7 unconstrained,
        7 behind 600 kbit/s, 6 behind 150 kbit/s), against 1 unconstrained
        receiver of the same star. The layers are encoded whatever the
        receivers; what each receiver costs is forwarding (choice,
        renumbering, SRTP, sending) from the layer it gets."""
        secs = 3 if self.quick else 20
        settle = 5 if self.quick else 10
        rates = ["10gbit"] * 7 + ["600kbit"] * 7 + ["150kbit"] * 6
        star = CappedStar(rates)
        try:
            relay = spawn(star.exec(star.hub, [self.p2p, "signal", "--listen", "0.0.0.0:0", "-q"]),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            port = relay.stdout.readline().strip().rsplit(":", 1)[-1]
            room = f"fanl-{uuid.uuid4().hex[:8]}"
            sev = os.path.join(self.tmp, f"{room}.sender")
            sender = spawn(star.exec(star.hub, [self.p2p, "send", "--test-source", "--test-pattern", "zone-plate",
                                                "--no-audio", "--width", "640", "--height", "480", "--fps", "30",
                                                "--video-bitrate", "1000", "--room", room,
                                                "--signal", f"ws://127.0.0.1:{port}", "-q", "--events-file", sev]),
                           stdin=subprocess.DEVNULL)
            receivers = []
            cpu, layers = {}, {}

            def last_stats():
                stats = [e for e in read_events(sev) if e.get("event") == "stats"]
                return stats[-1] if stats else {}

            def measure(n):
                c0, t0 = cpu_secs(sender.pid), time.time()
                time.sleep(secs)
                c1, el = cpu_secs(sender.pid), time.time() - t0
                return (c1 - c0) * secs / el, t0, el

            for n in (1, len(rates)):
                while len(receivers) < n:
                    k = len(receivers)
                    receivers.append(spawn(star.exec(star.leaves[k], [
                        self.p2p, "receive", "--room", room, "--signal", f"ws://{star.hub_addr(k)}:{port}", "-q"]),
                        stdout=subprocess.DEVNULL))
                wait_for(lambda: last_stats().get("receivers", 0) >= n, 60, f"{n} receivers", interval=0.2)
                time.sleep(settle)
                cpu[n], t0, el = measure(n)
                # Each receiver's layer over the window, the one it had most
                # often (a snapshot can fall on a trial of a bigger layer).
                seen = {}
                for e in read_events(sev):
                    if e.get("event") == "stats" and t0 * 1000 <= e.get("ts", 0) <= (t0 + el) * 1000:
                        for p in e.get("peers", []):
                            seen.setdefault(p.get("id"), []).append(p.get("layer"))
                got = [max(set(ls), key=ls.count) for ls in seen.values()]
                layers[n] = [got.count(k) for k in range(3)]
                log(f"  {n} receiver(s) over the layers: {cpu[n]:.2f} CPU s over {secs} s, per layer {layers[n]}")
            # One receiver again, after the 20: the baseline is the mean of
            # before and after, so a machine that drifts (these 2-core
            # machines move by ±15 % between runs) weighs on both sides.
            for r in receivers[1:]:
                stop(r)
            wait_for(lambda: last_stats().get("receivers", 0) == 1, 60, "1 receiver again", interval=0.2)
            time.sleep(settle)
            after, _, _ = measure(1)
            log(f"  1 receiver again: {after:.2f} CPU s over {secs} s")
            cpu["1 before"], cpu["1 after"] = cpu[1], after
            cpu[1] = (cpu[1] + after) / 2
        finally:
            cleanup()
            star.close()
        n = len(rates)
        self.raw["fanout_layers"] = dict(secs=secs, cpu=cpu, layers=layers, caps=rates)
        per = "/".join(str(c) for c in layers[n])
        self.row("2 fan-out", f"sender CPU over {secs} s, same sender, {n} receivers each behind its own link "
                 f"(7 unconstrained, 7 at 600 kbit/s, 6 at 150 kbit/s): {per} on the 640/320/160-wide layers "
                 "(each receiver's most frequent layer over the window)",
                 f"{cpu[n]:.2f} s ({cpu[n] / secs * 100:.0f} % of a core)", "",
                 baseline=f"{cpu[1]:.2f} s (1 unconstrained receiver, same star: mean of before, "
                          f"{cpu['1 before']:.2f}, and after, {cpu['1 after']:.2f})",
                 ratio=cpu[n] / cpu[1], target="CPU(20 over the layers)/CPU(1) ≤ 1.3",
                 met=cpu[n] / cpu[1] <= 1.3)

    # ------------------------------------------------------------ (3) capture-to-receiver latency

    def encode_floor(self, width, height, frames):
        """The same live source and VP8 settings as `p2p send --test-source`
        (src/media/capture.rs) ending in a fakesink: GStreamer's latency
        tracer times each frame from the source's push to the sink, which
        is capture + encode with no network, the floor p2p adds to."""
        caps = f"video/x-raw,width={width},height={height}"
        pipeline = (
            f"videotestsrc is-live=true pattern=ball num-buffers={frames} ! videoconvert ! "
            f"videoscale ! videorate drop-only=true max-rate=30 ! {caps} ! "
            "clockoverlay time-format=%H:%M:%S shaded-background=true font-desc=\"Sans 36\" ! "
            "videoconvert ! queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0 ! "
            "vp8enc deadline=1 cpu-used=8 lag-in-frames=0 end-usage=cbr target-bitrate=1000000 "
            "keyframe-max-dist=300 error-resilient=default threads=1 buffer-size=1000 ! "
            "rtpvp8pay mtu=1200 ! fakesink")
        env = dict(os.environ, GST_TRACERS="latency", GST_DEBUG="GST_TRACER:7",
                   GST_DEBUG_NO_COLOR="1")
        out = subprocess.run(["gst-launch-1.0", "-q"] + shlex.split(pipeline), env=env,
                             capture_output=True, text=True, timeout=120)
        ms = [int(m.group(1)) / 1e6 for m in
              re.finditer(r"\blatency, src-element-id=.*?time=\(guint64\)(\d+)", out.stderr)]
        if len(ms) < frames // 2:
            raise RuntimeError(f"latency tracer gave {len(ms)} of {frames} frames: {out.stderr[-300:]}")
        return percentile(ms, 50), percentile(ms, 95)

    def capture_latency(self):
        secs = 3 if self.quick else 15
        _, url = self.relay()
        results = {}
        for width, height in [(640, 480), (1280, 720)]:
            room = f"lat-{uuid.uuid4().hex[:8]}"
            sev = os.path.join(self.tmp, f"{room}.sender")
            rev = os.path.join(self.tmp, f"{room}.receiver")
            sender = spawn([self.p2p, "send", "--test-source", "--no-audio", "--width", str(width),
                            "--height", str(height), "--fps", "30", "--video-bitrate", "1000",
                            "--room", room, "--signal", url, "-q", "--events-file", sev],
                           stdin=subprocess.DEVNULL)
            recv = spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q",
                          "--record", os.path.join(self.tmp, f"{room}.webm"), "--events-file", rev],
                         stdout=subprocess.DEVNULL)
            wait_for(lambda: any(e.get("event") == "keyframe" for e in read_events(rev)), 30,
                     "first key frame")
            time.sleep(secs + 1.5)
            stop(recv)
            stop(sender)
            stats = [e["latency_ms"] for e in read_events(rev)
                     if e.get("event") == "stats" and e.get("latency_ms")]
            if not stats:
                raise RuntimeError("the receiver reported no latency_ms")
            lat = stats[-1]
            floor = self.encode_floor(width, height, 30 * secs)
            results[f"{width}x{height}"] = dict(p2p=lat, floor_p50=floor[0], floor_p95=floor[1])
            log(f"  {width}×{height}: p50 {lat['p50']} ms p95 {lat['p95']} ms over {lat['frames']} frames; "
                f"capture+encode floor p50 {floor[0]:.1f} ms p95 {floor[1]:.1f} ms")
            label = f"{width}×{height}@30 VP8, {lat['frames']} frames"
            self.row("3 capture→receiver", f"latency p50 ({label}; abs-capture-time)", f"{lat['p50']:.1f} ms", "",
                     baseline=f"{floor[0]:.1f} ms (capture+encode alone, GStreamer latency tracer)",
                     ratio=lat["p50"] / floor[0],
                     target="p50 ≤ 30 ms at 720p" if height == 720 else "",
                     met=(lat["p50"] <= 30) if height == 720 else None)
            self.row("3 capture→receiver", f"latency p95 ({width}×{height})", f"{lat['p95']:.1f} ms", "",
                     baseline=f"{floor[1]:.1f} ms (same)", ratio=lat["p95"] / floor[1])
        self.raw["capture_latency"] = results

    # ------------------------------------------------------------ (6) memory

    def memory(self):
        cycles = self.a.churn
        parallel = 4
        _, url = self.relay()
        room = f"mem-{uuid.uuid4().hex[:8]}"
        sev = os.path.join(self.tmp, f"{room}.sender")
        sender = spawn([self.p2p, "send", "--keep-open", "--room", room, "--signal", url, "-q",
                        "--events-file", sev], stdin=subprocess.PIPE)

        def count(kind):
            return sum(1 for e in read_events(sev) if e.get("event") == kind)

        def live():
            return count("channel") - count("dispose")

        wait_for(lambda: count("start") > 0, 30, "sender start")
        time.sleep(1)
        rss0 = rss_kb(sender.pid)
        receivers = [spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q"],
                           stdout=subprocess.DEVNULL)]
        wait_for(lambda: live() >= 1, 30, "1 receiver")
        time.sleep(2)
        rss1 = rss_kb(sender.pid)
        while len(receivers) < 50:
            receivers.append(spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q"],
                                   stdout=subprocess.DEVNULL))
        wait_for(lambda: live() >= 50, 120, "50 receivers", interval=0.2)
        time.sleep(2)
        rss50 = rss_kb(sender.pid)
        for r in receivers:
            stop(r)
        stop(sender)
        per_peer = (rss50 - rss1) / 49 / 1024
        self.row("6 memory", "sender RSS, data-only: 0 / 1 / 50 receivers",
                 f"{rss0 / 1024:.1f} / {rss1 / 1024:.1f} / {rss50 / 1024:.1f} MB", "")
        self.row("6 memory", "sender RSS per extra receiver ((RSS50 − RSS1)/49)",
                 f"{per_peer:.2f} MB", "", target="≤ 1 MB", met=per_peer <= 1.0)

        # churn, on a fresh sender (so the 50-receiver peak does not hide growth):
        # receivers that connect (channel open) and leave, `parallel` at a time
        room = f"churn-{uuid.uuid4().hex[:8]}"
        sev = os.path.join(self.tmp, f"{room}.sender")
        sender = spawn([self.p2p, "send", "--keep-open", "--room", room, "--signal", url, "-q",
                        "--events-file", sev], stdin=subprocess.PIPE)
        wait_for(lambda: count("start") > 0, 30, "sender start")
        done = [0]
        errors = []
        lock = threading.Lock()

        def one_cycle():
            ev = os.path.join(self.tmp, f"{room}.c{uuid.uuid4().hex[:8]}")
            r = spawn([self.p2p, "receive", "--room", room, "--signal", url, "-q",
                       "--events-file", ev], stdout=subprocess.DEVNULL)
            try:
                wait_for(lambda: any(e.get("event") == "channel" for e in read_events(ev)), 30,
                         "a churn receiver's channel", interval=0.01)
            finally:
                stop(r)
                try:
                    os.unlink(ev)
                except OSError:
                    pass

        def worker(target):
            while True:
                with lock:
                    if done[0] >= target or errors:
                        return
                    done[0] += 1
                try:
                    one_cycle()
                except Exception as e:
                    errors.append(e)
                    return

        def churn_to(target):
            ts = [threading.Thread(target=worker, args=(target,)) for _ in range(parallel)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            if errors:
                raise errors[0]
            wait_for(lambda: live() <= 0, 60, "churned receivers gone", interval=0.2)
            time.sleep(2)
            return rss_kb(sender.pid)

        t0 = time.time()
        first = min(100, cycles)
        rss_100 = churn_to(first)
        log(f"  {first} cycles in {time.time() - t0:.0f}s, RSS {rss_100 / 1024:.1f} MB")
        rss_n = churn_to(cycles)
        log(f"  {cycles} cycles in {time.time() - t0:.0f}s, RSS {rss_n / 1024:.1f} MB")
        stop(sender)
        growth = (rss_n - rss_100) / rss_100 * 100
        self.raw["memory"] = dict(rss0_kb=rss0, rss1_kb=rss1, rss50_kb=rss50, rss_after_100_kb=rss_100,
                                  rss_after_n_kb=rss_n, cycles=cycles, churn_secs=time.time() - t0)
        self.row("6 memory", f"fresh sender's RSS after {first} → {cycles} receiver connect/leave cycles ({parallel} at a time)",
                 f"{rss_100 / 1024:.1f} → {rss_n / 1024:.1f} MB ({growth:+.1f} %)", "",
                 target="growth < 10 %", met=growth < 10)

    # ------------------------------------------------------------ (9) WHIP

    def whip(self):
        """Publishing to an SFU: Janus (VideoRoom) behind simple-whip-server,
        set up on this machine by scripts/janus-whip.sh. "Accepted by Janus"
        is the first video packet Janus forwards (rtp_forward) to a UDP
        socket here: it has taken the publisher's media in."""
        d = os.path.join(self.tmp, "janus")
        out = subprocess.run(["bash", "scripts/janus-whip.sh", "start", d],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError("scripts/janus-whip.sh start failed: " + out.stderr[-400:])
        try:
            with open(os.path.join(d, "env")) as f:
                env = dict(l.split("=", 1) for l in f.read().split())
            self.whip_figures(env["WHIP_BASE"])
        finally:
            subprocess.run(["bash", "scripts/janus-whip.sh", "stop", d],
                           capture_output=True, timeout=120)

    def whip_endpoint(self, base, room=1234, forward=False):
        """A new endpoint (own id); with `forward`, Janus forwards its video
        to a UDP socket, returned bound."""
        eid = uuid.uuid4().hex[:8]
        body = {"id": eid, "room": room}
        sock = None
        if forward:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            body["recipient"] = {"host": "127.0.0.1", "audioPort": free_port(),
                                 "videoPort": port, "videoRtcpPort": free_port()}
        req = urllib.request.Request(f"{base}/create", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        return f"{base}/endpoint/{eid}", sock

    def whip_publish_time(self, base, cmd):
        """Seconds from starting `cmd(url)` to the first packet Janus
        forwards; the publisher is then stopped (it DELETEs)."""
        url, sock = self.whip_endpoint(base, forward=True)
        sock.settimeout(30)
        t0 = time.monotonic()
        p = spawn(cmd(url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sock.recvfrom(2048)
            return time.monotonic() - t0
        finally:
            sock.close()
            stop(p, signal.SIGINT, wait=10)

    def whip_figures(self, base):
        runs = 3 if self.quick else 10
        page = os.path.join(os.getcwd(), "tests/browser/whip-publish-page.mjs")
        p2p_t, chromium_t = [], []
        for _ in range(runs):
            p2p_t.append(self.whip_publish_time(
                base, lambda url: [self.p2p, "send", "--test-source", "-q", "--whip", url]))
            chromium_t.append(self.whip_publish_time(
                base, lambda url: ["node", page, url, "--full", "--seconds", "60"]))
        a, b = median(p2p_t), median(chromium_t)
        self.raw["whip_publish"] = dict(p2p=p2p_t, chromium=chromium_t)
        log(f"  publish time: p2p {a * 1000:.0f} ms, Chromium page {b * 1000:.0f} ms")
        self.row("9 publish to an SFU", f"command start → first packet Janus forwards, median of {runs} "
                 "(`p2p send --test-source --whip`; baseline: headless Chromium publishing its fake "
                 "camera from a page, cold start)",
                 f"{a * 1000:.0f} ms", "", baseline=f"{b * 1000:.0f} ms", ratio=a / b)

        # Sender CPU: the same 640×480 source to one receiver in a room,
        # to Janus only, and to both.
        secs = 5 if self.quick else 20
        _, relay = self.relay()
        cpu = {}
        for case in ("mesh", "whip", "both"):
            room = f"whip-{uuid.uuid4().hex[:8]}"
            args = [self.p2p, "send", "--test-source", "--test-pattern", "zone-plate", "-q"]
            if case in ("mesh", "both"):
                args += ["--room", room, "--signal", relay]
            if case in ("whip", "both"):
                url, _ = self.whip_endpoint(base)
                args += ["--whip", url]
            sender = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            recv = None
            if case in ("mesh", "both"):
                recv = spawn([self.p2p, "receive", "--room", room, "--signal", relay, "-q"],
                             stdout=subprocess.DEVNULL)
            time.sleep(4)
            c0, t0 = cpu_secs(sender.pid), time.time()
            time.sleep(secs)
            cpu[case] = (cpu_secs(sender.pid) - c0) * secs / (time.time() - t0)
            for p in (recv, sender):
                if p is not None:
                    stop(p, signal.SIGINT, wait=10)
            log(f"  sender CPU, {case}: {cpu[case]:.2f} s over {secs} s")
        self.raw["whip_cpu"] = dict(secs=secs, cpu=cpu)
        labels = {"mesh": "1 receiver in a room (3 layers)",
                  "whip": "Janus over --whip only (1 layer)",
                  "both": "1 receiver in a room and Janus (3 layers)"}
        for case in ("mesh", "whip", "both"):
            self.row("9 publish to an SFU", f"sender CPU over {secs} s, 640×480@30 zone plate: {labels[case]}",
                     f"{cpu[case]:.2f} s ({cpu[case] / secs * 100:.0f} % of a core)", "",
                     baseline="" if case == "mesh" else f"{cpu['mesh']:.2f} s (room only)",
                     ratio=None if case == "mesh" else cpu[case] / cpu["mesh"])

    def whep(self):
        """WHEP viewers: headless Chromium (tests/browser/whep-watch-page.mjs)
        POSTs a recvonly offer to `p2p send --whep-listen`; timed inside the
        page from the POST to the first video frame shown and the first
        audio decoded. Baseline: the same page watching a WHEP server made
        with aiortc (tests/aiortc/whep_server.py), in the same run."""
        runs = 3 if self.quick else 10
        python = os.path.join(ROOT, "target", "aiortc-venv", "bin", "python")
        if not os.path.exists(python):
            raise RuntimeError("no aiortc venv: run scripts/aiortc-venv.sh")
        servers = {
            "p2p": [self.p2p, "send", "--test-source", "-q", "--whep-listen", "127.0.0.1:0"],
            "aiortc": [python, os.path.join(ROOT, "tests", "aiortc", "whep_server.py")],
        }
        got = {}
        for name, cmd in servers.items():
            server = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                url = server.stdout.readline().strip()
                if not url.startswith("http://"):
                    raise RuntimeError(f"{name}'s WHEP server did not start")
                got[name] = [self.whep_watch(url) for _ in range(runs)]
            finally:
                stop(server, signal.SIGINT, wait=10)
            log(f"  WHEP {name}: " + ", ".join(f"{r['frame']}/{r['audio']} ms" for r in got[name]))
        self.raw["whep"] = got
        for key, what, target in (("frame", "first video frame shown", "≤ 300 ms"),
                                  ("audio", "first audio decoded", "≤ 300 ms"),
                                  ("connected", "connectionState `connected`", ""),
                                  ("post", "the 201 with the answer", "")):
            mine = sorted(r[key] for r in got["p2p"])
            theirs = sorted(r[key] for r in got["aiortc"])
            a, b = median(mine), median(theirs)
            label = (f"Chromium watching `p2p send --whep-listen`: POST → {what} "
                     f"(median of {runs}; all: {', '.join(str(x) for x in mine)})")
            self.row("12 WHEP viewers", label, f"{a:.0f} ms", "",
                     baseline=f"{b:.0f} ms (the same page watching aiortc's WHEP server)",
                     ratio=a / b if b else None, target=target,
                     met=(a <= 300) if target else None)

    def whep_watch(self, url):
        """One viewer of `url` for a second: ms from its POST to connected,
        first frame and first audio, each checked to have decoded."""
        page = os.path.join(ROOT, "tests", "browser", "whep-watch-page.mjs")
        out = subprocess.run(["node", page, url, "--seconds", "1"], capture_output=True,
                             text=True, timeout=90)
        lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
        ev = {l.get("event"): l for l in lines}
        done = ev.get("done", {})
        if out.returncode != 0 or not done.get("framesDecoded") or not done.get("audioSamples"):
            raise RuntimeError(f"the WHEP viewer failed: {lines} {out.stderr[-400:]}")
        return dict(post=ev["created"]["postMs"], frame=ev["first-frame"]["ms"],
                    audio=ev["first-audio"]["ms"], connected=ev["connected"]["ms"])

    # ------------------------------------------------------------ report

    def run(self):
        figures = {
            "4": ("4 data channel", self.data_channel),
            "5": ("5 relay", self.relay_throughput),
            "1": ("1 time to media", self.time_to_media),
            "2": ("2 fan-out", lambda: (self.fanout(), cleanup(), self.fanout_layers())),
            "3": ("3 capture-to-receiver latency", self.capture_latency),
            "6": ("6 memory", self.memory),
            "7": ("7 across NATs", self.across_nats),
            "8": ("8 constrained links", self.constrained_links),
            "9": ("9 publish to an SFU", self.whip),
            "10": ("10 link matrix", lambda: matrix.link_matrix(self)),
            "11": ("11 network change", lambda: netchange.network_change(self)),
            "12": ("12 WHEP viewers", self.whep),
        }
        t0 = time.time()
        for key in self.a.only.split(","):
            name, fn = figures[key]
            self.figure(name, fn)
        self.elapsed = time.time() - t0

    def table(self):
        return table_of(self.rows)

    def machine(self):
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return dict(nproc=os.cpu_count(), cpu=cpu, kernel=platform.release(),
                    mem_gb=round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1))

    def write(self):
        m = self.machine()
        table = self.table()
        print()
        print(table)
        print()
        for fig, why in self.missing:
            print(f"- missing: {fig}: {why}")
        os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "bench", "results.json"), "w") as f:
            json.dump(dict(machine=m, rows=self.rows, raw=self.raw, missing=self.missing,
                           quick=self.quick), f, indent=1, default=str)
        if self.a.no_write:
            return
        notes_path = os.path.join(ROOT, "bench", "NOTES.md")
        notes = open(notes_path).read() if os.path.exists(notes_path) else ""
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        mode = "quick (`--quick`: fewer runs, shorter)" if self.quick else "full"
        missing = self.missing
        raw = self.raw
        header = (f"- date: {date}\n"
                  f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}, {m['mem_gb']} GiB, Linux {m['kernel']}\n"
                  f"- mode: {mode}; suite took {self.elapsed:.0f} s\n"
                  f"- build: `cargo build --release` (`{self.a.version}`)")
        out = os.path.join(ROOT, "BENCHMARKS.md")
        partial = sorted(self.a.only.split(",")) != sorted(ALL_FIGURES.split(","))
        if partial and not self.quick and os.path.exists(out):
            # Some figures: their rows replace the last run's, the rest stay
            # as measured then, and the header says which run is which.
            table, header, missing, raw = merge_into(open(out).read(), self.rows, header, missing, raw,
                                                     f"`--only {self.a.only}`, {date}, {self.elapsed:.0f} s")
        missing = ("\n".join(f"- **{fig}**: {why}" for fig, why in missing)
                   or "None: every figure was measured in this run.")
        raw = json.dumps(raw, indent=1, default=str)
        doc = f"""# Benchmarks

Generated by `{self.a.command}` — do not edit by hand (the analysis below
comes from `bench/NOTES.md`).

{header}

Ratios are p2p ÷ baseline, both measured in this run on this machine
(medians where several runs are noted). The machine is shared and noisy:
compare ratios, not absolute numbers, across machines.

{table}

## Missing figures

{missing}

{notes}
<details><summary>raw results (JSON)</summary>

```json
{raw}
```
</details>
"""
        # --quick (CI) must not replace the full run's BENCHMARKS.md
        if self.quick:
            out = os.path.join(ROOT, "target", "bench", "BENCHMARKS.quick.md")
        with open(out, "w") as f:
            f.write(doc)
        log(f"wrote {os.path.relpath(out, ROOT)}")


ALL_FIGURES = "4,5,1,2,3,6,7,8,9,10,11,12"


def merge_into(old, rows, header, missing, raw, run):
    """The table, header, missing figures and raw results of BENCHMARKS.md
    text `old` with the figures of `rows` (a run of some figures, `run`
    says which) put in place of the rows it had for them."""
    lines = old.splitlines()
    start = lines.index("| figure | measure | p2p | baseline (same run) | ratio | target | met |")
    end = start + 2
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    fig = lambda line: line.split("|")[1].strip()
    new = {}
    for r in rows:
        new.setdefault(r["fig"], []).append(r)
    rendered = {f: table_of(rs).splitlines()[2:] for f, rs in new.items()}
    body, placed = [], set()
    for line in lines[start + 2:end]:
        f = fig(line)
        if f in rendered:
            if f not in placed:
                body += rendered[f]
                placed.add(f)
        else:
            body.append(line)
    for f, rs in rendered.items():
        if f not in placed:
            body += rs
    table = "\n".join(lines[start:start + 2] + body)
    # The header: the full run's lines, and one more per partial run.
    names = ", ".join(sorted(new, key=lambda f: int(f.split()[0])))
    # (An earlier partial run of the same figures is overtaken.)
    old_header = [l for l in lines[:start] if l.startswith("- ")
                  and not (l.startswith("- re-measured since") and l.endswith(f": {names}"))]
    header = "\n".join(old_header + [f"- re-measured since ({run}): {names}"])
    # Missing: the old run's, less the figures measured now, and the new.
    measured = {f.split()[0] for f in new}
    old_missing = []
    if "## Missing figures" in lines:
        for l in lines[lines.index("## Missing figures") + 1:]:
            if l.startswith("## ") or l.startswith("<details>"):
                break
            if l.startswith("- **"):
                f, why = l[4:].split("**: ", 1)
                if f.split()[0] not in measured:
                    old_missing.append((f, why))
    old_raw = {}
    if "```json" in lines:
        j = lines.index("```json")
        k = lines.index("```", j + 1)
        try:
            old_raw = json.loads("\n".join(lines[j + 1:k]))
        except ValueError:
            pass
    return table, header, old_missing + list(missing), {**old_raw, **raw}


def table_of(rows):
    lines = ["| figure | measure | p2p | baseline (same run) | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['fig']} | {r['measure']} | {r['value']} | {r['baseline'] or ''} "
                     f"| {ratio} | {r['target']} | {met} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--p2p", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--dc-loopback", default=None)
    ap.add_argument("--wan", default=None)
    ap.add_argument("--cells", default=None, help="figure 10: only these cells (comma-separated keys)")
    ap.add_argument("--ways", default="chromium,page,p2p", help="figures 10 and 11: only these ways")
    ap.add_argument("--logs", default=None, help="figure 10: keep p2p's debug logs in this directory")
    ap.add_argument("--matrix-runs", type=int, default=None,
                    help="figure 10: runs per cell and way (default 3, 1 with --quick)")
    ap.add_argument("--only", default=ALL_FIGURES,
                    help="these figures; their rows replace those of BENCHMARKS.md, the rest stay")
    ap.add_argument("--data-mb", type=int, default=None)
    ap.add_argument("--churn", type=int, default=None)
    ap.add_argument("--command", default="scripts/bench.sh")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if a.dc_loopback is None:
        a.dc_loopback = os.path.join(os.path.dirname(a.loadgen), "dc_loopback")
    if a.wan is None:
        a.wan = os.path.join(os.path.dirname(a.loadgen), "wan")
    if a.data_mb is None:
        a.data_mb = 50 if a.quick else 200
    if a.churn is None:
        a.churn = 120 if a.quick else 1000
    a.version = subprocess.run([a.p2p, "--version"], capture_output=True, text=True).stdout.strip()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    b = Bench(a)
    try:
        b.run()
        b.write()
    finally:
        cleanup()
    measured_missing = [m for m in b.missing if m[1].startswith("failed")]
    sys.exit(1 if measured_missing else 0)


if __name__ == "__main__":
    main()
