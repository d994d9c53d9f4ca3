"""Drives Kaigi's admin API with Tencent's official Cloud API SDK for
Python (tencentcloud-sdk-python-trtc), unchanged: only the endpoint and the
scheme are set, as any backend pointed at another address sets them.

    tencentcloud_sdk.py --endpoint HOST:PORT --calls JSON

JSON is a list of {"secretId", "secretKey", "action", "params"}; each call's
outcome is printed as one JSON line: {"ok": RequestId} or
{"error": Code, "message": Message}.
"""

import argparse
import json

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import models, trtc_client


def client(endpoint, secret_id, secret_key):
    http = HttpProfile()
    http.endpoint = endpoint
    http.scheme = "http"
    profile = ClientProfile()
    profile.httpProfile = http
    cred = credential.Credential(secret_id, secret_key)
    return trtc_client.TrtcClient(cred, "ap-guangzhou", profile)


def call(c, action, params):
    request_class = getattr(models, action + "Request", None)
    if request_class is None:
        # Actions this SDK release has no model for go through its generic
        # call, signed the same way.
        body = c.call_json(action, params)
        return body["Response"]["RequestId"]
    req = request_class()
    req.from_json_string(json.dumps(params))
    resp = getattr(c, action)(req)
    return resp.RequestId


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--calls", required=True)
    args = p.parse_args()
    for spec in json.loads(args.calls):
        c = client(args.endpoint, spec["secretId"], spec["secretKey"])
        try:
            out = {"ok": call(c, spec["action"], spec["params"])}
        except TencentCloudSDKException as e:
            out = {"error": e.get_code(), "message": e.get_message()}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
