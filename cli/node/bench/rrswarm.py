#!/usr/bin/env python3
"""Route-reflector clients for rr.sh: N iBGP clients in one process, each with its own source
address, each peering with every reflector given, each announcing BLOCKS /26 blocks.

Phases, driven by files in --dir (the harness samples the reflectors' CPU between them):
  1. connect every client to every reflector; when all sessions are Established write `up`
  2. wait for `go`; t0; every client sends its blocks (one UPDATE per session); wait until
     every client holds every other client's blocks from at least one reflector (t_any) and
     from every reflector (t_all); write `converged.json`
  3. wait for `flap`; t1; client 1 closes its sessions (Cease); wait until no other client
     holds any of its blocks (t_withdrawn); it reconnects and announces again; wait until
     every client holds every other client's blocks from every reflector (t_back);
     write `flap.json`
  4. wait for `stop`, then close everything.
Every wait is bounded by --timeout; a phase that times out writes its file with
"timeout": true and the counts reached. Only stdlib; one epoll loop, no threads.
"""
import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time

MARKER = b'\xff' * 16
OPEN, UPDATE, NOTIFICATION, KEEPALIVE = 1, 2, 3, 4


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def msg(mtype, body=b''):
    return MARKER + struct.pack('!HB', 19 + len(body), mtype) + body


def ip_int(s):
    return struct.unpack('!I', socket.inet_aton(s))[0]


def client_ip(i):
    """Client i (1-based): 10.77.(100 + i / 250).(i % 250 + 1)."""
    return f'10.77.{100 + i // 250}.{i % 250 + 1}'


def block_nlri(i, k):
    """Block k of client i: the (i*16 + k)-th /26 from 10.241.0.0 (16 slots per client), as NLRI bytes."""
    a = ip_int('10.241.0.0') + (i * 16 + k) * 64
    return bytes([26]) + struct.pack('!I', a)[:4]


def open_msg(asn, rid, hold=90):
    caps = bytes([1, 4, 0, 1, 0, 1]) + bytes([65, 4]) + struct.pack('!I', asn)
    opt = bytes([2, len(caps)]) + caps
    return msg(OPEN, struct.pack('!BHH4sB', 4, asn, hold, socket.inet_aton(rid), len(opt)) + opt)


def update_msg(nexthop, nlris):
    attrs = b'\x40\x01\x01\x00'                                  # ORIGIN IGP
    attrs += b'\x40\x02\x00'                                     # AS_PATH empty (iBGP)
    attrs += b'\x40\x03\x04' + socket.inet_aton(nexthop)        # NEXT_HOP
    attrs += b'\x40\x05\x04' + struct.pack('!I', 100)           # LOCAL_PREF
    return msg(UPDATE, struct.pack('!H', 0) + struct.pack('!H', len(attrs)) + attrs +
               b''.join(nlris))


def split_nlri(buf):
    out, i = [], 0
    while i < len(buf):
        n = 1 + ((buf[i] + 7) >> 3)
        # Normalise to 5 bytes (length + 4 address bytes) so keys compare with block_nlri.
        out.append(buf[i:i + n] + b'\x00' * (5 - n))
        i += n
    return out


def parse_update(body):
    """(withdrawn, announced) IPv4 unicast NLRI lists, classic fields and MP_(UN)REACH."""
    wl = struct.unpack_from('!H', body, 0)[0]
    withdrawn = split_nlri(body[2:2 + wl])
    al = struct.unpack_from('!H', body, 2 + wl)[0]
    attrs = body[4 + wl:4 + wl + al]
    announced = split_nlri(body[4 + wl + al:])
    i = 0
    while i < len(attrs):
        flags, code = attrs[i], attrs[i + 1]
        if flags & 0x10:
            ln = struct.unpack_from('!H', attrs, i + 2)[0]
            v = attrs[i + 4:i + 4 + ln]
            i += 4 + ln
        else:
            ln = attrs[i + 2]
            v = attrs[i + 3:i + 3 + ln]
            i += 3 + ln
        if code == 14 and v[:3] == b'\x00\x01\x01':              # MP_REACH IPv4 unicast
            nhl = v[3]
            announced += split_nlri(v[5 + nhl:])
        elif code == 15 and v[:3] == b'\x00\x01\x01':            # MP_UNREACH IPv4 unicast
            withdrawn += split_nlri(v[3:])
    return withdrawn, announced


class Session:
    def __init__(self, client, rr_index, rr_ip):
        self.client, self.rr, self.rr_ip = client, rr_index, rr_ip
        self.sock = None
        self.state = 'idle'       # idle -> connecting -> opensent -> openconfirm -> up
        self.rbuf = b''
        self.wbuf = b''
        self.retry_at = 0.0


class Swarm:
    def __init__(self, a):
        self.a = a
        self.n = a.clients
        self.rrs = a.rr
        self.full = (1 << len(self.rrs)) - 1
        self.expected = (self.n - 1) * a.blocks
        self.owner = {}
        for i in range(1, self.n + 1):
            for k in range(a.blocks):
                self.owner[block_nlri(i, k)] = i
        # have[i][nlri] = bitmask of reflectors client i holds that block from
        self.have = [dict() for _ in range(self.n + 1)]
        self.any_cnt = [0] * (self.n + 1)
        self.all_cnt = [0] * (self.n + 1)
        self.sel = selectors.DefaultSelector()
        self.sessions = [Session(i, r, ip) for i in range(1, self.n + 1)
                         for r, ip in enumerate(self.rrs)]
        self.by_client = {}
        for s in self.sessions:
            self.by_client.setdefault(s.client, []).append(s)
        self.up = 0
        self.errors = 0
        self.next_ka = now() + 30

    # ---- sockets
    def connect(self, s):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((client_ip(s.client), 0))
        try:
            sock.connect((s.rr_ip, 179))
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            s.retry_at = now() + 1
            return
        s.sock, s.state, s.rbuf, s.wbuf = sock, 'connecting', b'', b''
        self.sel.register(sock, selectors.EVENT_WRITE, s)

    def drop(self, s, why):
        if s.sock is not None:
            try:
                self.sel.unregister(s.sock)
            except (KeyError, ValueError):
                pass
            s.sock.close()
        if s.state == 'up':
            self.up -= 1
            self.forget(s)
        if why:
            self.errors += 1
            print(f'swarm: client {s.client} rr {s.rr_ip}: {why}', file=sys.stderr, flush=True)
        s.sock, s.state, s.retry_at = None, 'idle', now() + 1

    def send(self, s, data):
        s.wbuf += data
        self.flush(s)

    def flush(self, s):
        if s.sock is None:
            return
        try:
            while s.wbuf:
                n = s.sock.send(s.wbuf)
                s.wbuf = s.wbuf[n:]
        except BlockingIOError:
            pass
        except OSError as e:
            self.drop(s, f'send: {e}')
            return
        self.sel.modify(s.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if s.wbuf else 0), s)

    # ---- routes held by client i
    def learn(self, i, bit, nlri):
        own = self.owner.get(nlri)
        if own is None or own == i:
            return
        h = self.have[i]
        old = h.get(nlri, 0)
        new = old | bit
        if new == old:
            return
        h[nlri] = new
        if old == 0:
            self.any_cnt[i] += 1
        if new == self.full:
            self.all_cnt[i] += 1

    def unlearn(self, i, bit, nlri):
        h = self.have[i]
        old = h.get(nlri, 0)
        if not old & bit:
            return
        new = old & ~bit
        if old == self.full:
            self.all_cnt[i] -= 1
        if new == 0:
            del h[nlri]
            self.any_cnt[i] -= 1
        else:
            h[nlri] = new

    def forget(self, s):
        bit = 1 << s.rr
        for nlri in list(self.have[s.client]):
            self.unlearn(s.client, bit, nlri)

    # ---- events
    def on_event(self, s, mask):
        if s.state == 'connecting':
            err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.drop(s, None)      # the reflector is not listening yet: retry in 1 s
                return
            s.state = 'opensent'
            self.send(s, open_msg(self.a.asn, client_ip(s.client)))
            return
        if mask & selectors.EVENT_WRITE:
            self.flush(s)
            if s.sock is None:
                return
        if mask & selectors.EVENT_READ:
            try:
                data = s.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                self.drop(s, f'recv: {e}')
                return
            if not data:
                self.drop(s, 'closed by the reflector')
                return
            s.rbuf += data
            self.parse(s)

    def parse(self, s):
        buf, off, bit = s.rbuf, 0, 1 << s.rr
        while len(buf) - off >= 19:
            ln, t = struct.unpack_from('!HB', buf, off + 16)
            if len(buf) - off < ln:
                break
            body = buf[off + 19:off + ln]
            off += ln
            if t == UPDATE:
                w, ann = parse_update(body)
                for p in w:
                    self.unlearn(s.client, bit, p)
                for p in ann:
                    self.learn(s.client, bit, p)
            elif t == OPEN:
                self.send(s, msg(KEEPALIVE))
                s.state = 'openconfirm'
            elif t == KEEPALIVE:
                if s.state == 'openconfirm':
                    s.state = 'up'
                    self.up += 1
            elif t == NOTIFICATION:
                s.rbuf = b''
                self.drop(s, f'NOTIFICATION {body[:2].hex()}')
                return
        s.rbuf = buf[off:]

    def poll(self, timeout=0.05):
        for key, mask in self.sel.select(timeout):
            if key.data.sock is not None:
                self.on_event(key.data, mask)
        t = now()
        for s in self.sessions:
            if s.state == 'idle' and s.retry_at <= t and s.client not in self.down_clients:
                self.connect(s)
        if t >= self.next_ka:
            self.next_ka = t + 30
            for s in self.sessions:
                if s.state == 'up':
                    self.send(s, msg(KEEPALIVE))

    # ---- phases
    def wait_file(self, name):
        path = os.path.join(self.a.dir, name)
        end = now() + self.a.timeout * 4
        while not os.path.exists(path):
            if now() > end:
                raise SystemExit(f'swarm: no {name} file within {self.a.timeout * 4:.0f} s')
            self.poll()

    def write(self, name, obj):
        tmp = os.path.join(self.a.dir, name + '.tmp')
        with open(tmp, 'w') as f:
            json.dump(obj, f)
        os.rename(tmp, os.path.join(self.a.dir, name))

    def announce(self, clients):
        for i in clients:
            upd = update_msg(client_ip(i), [block_nlri(i, k) for k in range(self.a.blocks)])
            for s in self.by_client[i]:
                self.send(s, upd)

    def until(self, cond, deadline):
        while not cond():
            if now() > deadline:
                return False
            self.poll(0.01)
        return True

    def run(self):
        a = self.a
        self.down_clients = set()
        total = len(self.sessions)
        start = now()
        if not self.until(lambda: self.up == total, start + a.timeout):
            self.write('up', {'timeout': True, 'up': self.up, 'total': total})
            return 1
        self.write('up', {'up_s': now() - start, 'sessions': total, 'errors': self.errors})

        self.wait_file('go')
        t0 = now()
        self.announce(range(1, self.n + 1))
        ok_any = self.until(lambda: all(c == self.expected for c in self.any_cnt[1:]),
                            t0 + a.timeout)
        t_any = now()
        ok_all = ok_any and self.until(
            lambda: all(c == self.expected for c in self.all_cnt[1:]), t0 + a.timeout)
        t_all = now()
        self.write('converged.json', {
            'timeout': not ok_all, 'any_s': t_any - t0, 'all_s': t_all - t0,
            'held_any': sum(self.any_cnt), 'held_all': sum(self.all_cnt),
            'expected': self.n * self.expected, 'errors': self.errors})
        if not ok_all:
            return 1

        self.wait_file('flap')
        gone = {block_nlri(1, k) for k in range(a.blocks)}
        t1 = now()
        self.down_clients.add(1)
        for s in self.by_client[1]:
            self.send(s, msg(NOTIFICATION, bytes([6, 2])))   # Cease / administrative shutdown
            self.drop(s, None)
        ok_w = self.until(lambda: all(not (gone & self.have[i].keys())
                                      for i in range(2, self.n + 1)), t1 + a.timeout)
        t_w = now()
        self.down_clients.clear()
        for s in self.by_client[1]:
            s.retry_at = 0
        ok_up = ok_w and self.until(lambda: all(s.state == 'up' for s in self.by_client[1]),
                                    t1 + a.timeout)
        self.announce([1])
        ok_b = ok_up and self.until(
            lambda: all(c == self.expected for c in self.all_cnt[1:]), t1 + a.timeout)
        t_b = now()
        self.write('flap.json', {'timeout': not ok_b, 'withdrawn_s': t_w - t1,
                                 'back_s': t_b - t1, 'errors': self.errors})
        self.wait_file('stop')
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--clients', type=int, required=True)
    ap.add_argument('--rr', action='append', required=True, help='reflector address')
    ap.add_argument('--asn', type=int, default=64512)
    ap.add_argument('--blocks', type=int, default=4)
    ap.add_argument('--dir', required=True)
    ap.add_argument('--timeout', type=float, default=120)
    a = ap.parse_args()
    if not 1 <= a.blocks <= 16 or not 2 <= a.clients <= 900:
        ap.error('--blocks 1..16, --clients 2..900')
    sys.exit(Swarm(a).run())


if __name__ == '__main__':
    main()
