# Shows drachtio-server interleaving its wire-protocol frames once its socket to an app is full
# (docs/sip-throughput.md, "The overload crash"). A raw app with a 4 KiB receive buffer
# authenticates, routes REGISTER, stops reading while REGISTERs flood in over UDP, then checks
# every frame strictly. Usage (drachtio-server running, SIP on UDP SIP_PORT):
#   python3 scripts/drachtio-interleave.py ADMIN_PORT SECRET SIP_PORT COUNT
import socket, sys, uuid, time, re
admin, secret, sip, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.connect(('127.0.0.1', admin))
def send(m):
    p = (str(uuid.uuid4()) + '|' + m).encode(); s.sendall(str(len(p)).encode() + b'#' + p)
buf = b''
def frames():
    global buf
    while True:
        h = buf.find(b'#')
        if h > 0 and re.fullmatch(rb'\d{1,8}', buf[:h]) and len(buf) >= h + 1 + int(buf[:h]):
            end = h + 1 + int(buf[:h]); m = buf[h+1:end]; buf = buf[end:]; yield m; continue
        if h > 0 and not re.fullmatch(rb'\d{1,8}', buf[:h]) or (h == -1 and len(buf) > 8):
            raise Exception('FRAMING LOST at %r' % buf[:300])
        d = s.recv(65536)
        if not d: return
        buf += d
send('authenticate|%s|' % secret); g = frames(); print(next(g)[:80]); send('route|register'); print(next(g)[:80])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0)); up = u.getsockname()[1]
def flood():
    for i in range(count):
        m = ('REGISTER sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%dx\r\nMax-Forwards: 70\r\nFrom: <sip:u%d@127.0.0.1>;tag=%d\r\nTo: <sip:u%d@127.0.0.1>\r\nCall-ID: c%d-%f\r\nCSeq: 1 REGISTER\r\nContact: <sip:u%d@10.0.0.1:5060>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n' % (sip, up, i, i, i, i, i, time.time(), i)).encode()
        u.sendto(m, ('127.0.0.1', sip))
        if i % 100 == 99: time.sleep(0.02)
flood(); time.sleep(3)
n = 0
s.settimeout(5)
try:
    last = b''
    for m in g:
        n += 1
        if b'REGISTER sip' in m and m.count(b'REGISTER sip') > 1: print('TWO messages in frame %d: %r' % (n, m)); break
        last = m
        if not re.match(rb'[0-9a-f-]{36}\|', m): print('CORRUPT frame %d: %r' % (n, m[:200])); break
except socket.timeout: print('no framing error in %d frames' % n)
except Exception as e: print('after %d frames: %s\nlast good frame: %r' % (n, e, last))
