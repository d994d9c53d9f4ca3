#!/usr/bin/env python3
"""UserSig interop helper built on Tencent's published `tls-sig-api-v2` library.

  gen APP KEY USER EXPIRE [TIME] [USERBUF]  print a UserSig made by Tencent's library
  verify SIG APP KEY USER                   check a UserSig with Tencent's decoding and HMAC
  vectors                                   print the JSON vectors in data/tencent_vectors.json
"""
import base64
import json
import sys
import time
import zlib
from unittest import mock

import TLSSigAPIv2


def gen(app, key, user, expire, at=None, userbuf=None):
    api = TLSSigAPIv2.TLSSigAPIv2(int(app), key)
    with mock.patch("time.time", return_value=float(at if at is not None else time.time())):
        if userbuf is None:
            return api.gen_sig(user, int(expire))
        return api.gen_sig_with_userbuf(user, int(expire), userbuf.encode("utf-8"))


def verify(sig, app, key, user):
    raw = TLSSigAPIv2.base64_decode_url(sig.encode("utf-8"))
    doc = json.loads(zlib.decompress(raw))
    if doc["TLS.ver"] != "2.0":
        return "bad version"
    if int(doc["TLS.sdkappid"]) != int(app):
        return "wrong sdkappid"
    if doc["TLS.identifier"] != user:
        return "wrong identifier"
    api = TLSSigAPIv2.TLSSigAPIv2(int(app), key)
    # Tencent's own HMAC routine (name-mangled private method).
    expected = api._TLSSigAPIv2__hmacsha256(
        doc["TLS.identifier"], doc["TLS.time"], doc["TLS.expire"], doc.get("TLS.userbuf")
    ).decode()
    if expected != doc["TLS.sig"]:
        return "bad signature"
    if time.time() > doc["TLS.time"] + doc["TLS.expire"]:
        return "expired"
    return "ok"


def vectors():
    key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
    cases = [
        (1400000000, key, "xiaojun", 180 * 86400, 1600000000, None),
        (1400000001, "kaigi-test-secret", "administrator", 86400, 1700000000, None),
        (20000001, "k", "user_with-dash", 60, 1234567890, None),
        (1400000000, key, "xiaojun", 86400, 1600000000, "abc"),
    ]
    out = []
    for app, k, user, expire, at, buf in cases:
        out.append({"sdkAppId": app, "key": k, "userId": user, "expire": expire,
                    "time": at, "userbuf": buf, "userSig": gen(app, k, user, expire, at, buf)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "gen":
        print(gen(*args))
    elif cmd == "verify":
        print(verify(*args))
    elif cmd == "vectors":
        vectors()
    else:
        sys.exit(__doc__)
