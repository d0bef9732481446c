"""Baselines for bench/: what a Python Lambda does today for the same jobs.

- warm-read: Powertools for AWS Lambda (Python) Parameters utility (SSMProvider.get with
  max_age, so warm reads come from its cache) plus PyJWT verifying the same Cognito ID token
  (RS256, iss, aud) with a cached JWKS (PyJWKClient), per request.
- contention: 200 threads read one cold parameter at once through Powertools; botocore events
  count the GetParameter calls that reach the store.

Prints one JSON object. Talks to the endpoint in AWS_ENDPOINT_URL (moto).
"""

import argparse
import json
import statistics
import threading
import time

import boto3
import jwt
from aws_lambda_powertools.utilities.parameters import SSMProvider


def percentile(samples, q):
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-len(ordered) * q // 1))))
    return ordered[rank - 1]


def warm_read(args):
    jwks = jwt.PyJWKClient(args.jwks_url, cache_keys=True)
    provider = SSMProvider(boto3_client=boto3.client("ssm"))

    def one():
        key = jwks.get_signing_key_from_jwt(args.token)
        claims = jwt.decode(
            args.token,
            key.key,
            algorithms=["RS256"],
            audience=args.client_id,
            issuer=args.issuer,
            options={"require": ["exp", "iss", "aud"]},
        )
        if claims.get("token_use") != "id":
            raise ValueError("not an ID token")
        tenant = claims["custom:tenantId"]
        return provider.get(f"{args.root}/{tenant}/{args.service}/{args.key}", max_age=300)

    expected = one()  # warm JWKS and parameter caches
    samples = []
    for _ in range(args.iterations):
        started = time.perf_counter_ns()
        value = one()
        samples.append(time.perf_counter_ns() - started)
        assert value == expected
    return {
        "count": len(samples),
        "p50_ns": percentile(samples, 0.50),
        "p99_ns": percentile(samples, 0.99),
        "mean_ns": int(statistics.fmean(samples)),
        "value": expected,
    }


def contention(args):
    client = boto3.client("ssm")
    calls = {"GetParameter": 0}
    lock = threading.Lock()

    def count(**_):
        with lock:
            calls["GetParameter"] += 1

    client.meta.events.register("before-call.ssm.GetParameter", count)
    provider = SSMProvider(boto3_client=client)
    name = f"{args.root}/{args.tenant}/{args.service}/{args.key}"
    barrier = threading.Barrier(args.threads)
    results = []

    def reader():
        barrier.wait()
        results.append(provider.get(name, max_age=300))

    threads = [threading.Thread(target=reader) for _ in range(args.threads)]
    started = time.perf_counter_ns()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "readers": len(results),
        "store_calls": calls["GetParameter"],
        "elapsed_ns": time.perf_counter_ns() - started,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["warm-read", "contention"])
    parser.add_argument("--token")
    parser.add_argument("--jwks-url")
    parser.add_argument("--issuer")
    parser.add_argument("--client-id")
    parser.add_argument("--root", default="/config-service")
    parser.add_argument("--tenant", default="tenant-a")
    parser.add_argument("--service", default="billing")
    parser.add_argument("--key", default="param_config_endpoint")
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=200)
    args = parser.parse_args()
    result = warm_read(args) if args.mode == "warm-read" else contention(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
