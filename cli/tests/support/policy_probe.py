#!/usr/bin/env python3
"""Traffic for the policy truth-table test, run inside a pod's network namespace.

  policy_probe.py serve          TCP 80 and 81 answer "ok"; UDP 53 echoes. Runs until killed.
  policy_probe.py probe IP...    for each IP, one line "IP tcp80 tcp81 udp53 icmp" (1 = answered,
                                 0 = not within the timeout), all probes in parallel.
"""
import socket
import subprocess
import sys
import threading

TIMEOUT = 1.5


def serve_tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"ok")
        except OSError:
            pass
        c.close()


def serve_udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, addr = s.recvfrom(512)
        s.sendto(data, addr)


def tcp(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=TIMEOUT) as c:
            c.settimeout(TIMEOUT)
            return c.recv(2) == b"ok"
    except OSError:
        return False


def udp(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        s.sendto(b"probe", (ip, port))
        data, _ = s.recvfrom(512)
        return data == b"probe"
    except OSError:
        return False
    finally:
        s.close()


def icmp(ip):
    r = subprocess.run(["ping", "-c", "1", "-W", "2", ip], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return r.returncode == 0


def main():
    if sys.argv[1] == "serve":
        for p in (80, 81):
            threading.Thread(target=serve_tcp, args=(p,), daemon=True).start()
        print("ready", flush=True)
        serve_udp(53)
        return
    results = {}
    threads = []
    for ip in sys.argv[2:]:
        results[ip] = [False] * 4
        for i, f in enumerate((lambda ip=ip: tcp(ip, 80), lambda ip=ip: tcp(ip, 81),
                               lambda ip=ip: udp(ip, 53), lambda ip=ip: icmp(ip))):
            def run(ip=ip, i=i, f=f):
                results[ip][i] = f()
            t = threading.Thread(target=run)
            t.start()
            threads.append(t)
    for t in threads:
        t.join()
    for ip in sys.argv[2:]:
        print(ip, " ".join("1" if x else "0" for x in results[ip]))


main()
