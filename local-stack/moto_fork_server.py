"""moto server, imported once and forked per stack.

Each stack the tests start runs its own moto server. A fresh `moto_server`
spends about 5 s of CPU importing moto's backends (SSM alone pulls in EC2)
before it serves its first request; with forty stacks in a test run that is
over three minutes of CPU on a two-core machine. This process imports moto and
the backends the stack uses once, then forks a server per request: each child
is moto's own `moto.server.main`, started with every module already loaded.

  python moto_fork_server.py serve SOCKET
      imports moto, listens on the Unix socket SOCKET, and forks a moto server
      for every connection (the test command starts one per run).
  python moto_fork_server.py run PORT
      runs one moto server on PORT (0: one it picks) in this process, as
      `moto_server` does, with DynamoDB's writes made atomic (below): what the
      local stack starts when no fork server runs.
  python moto_fork_server.py start SOCKET PORT
      asks the server on SOCKET for a moto server on PORT (0: one it picks),
      which writes to this process's stdout and stderr and joins its process
      group; then waits until that moto server exits. The local stack starts
      this in place of `moto_server` when MOTO_FORK_SERVER_SOCKET names the
      socket, so stopping, pausing (SIGSTOP) or killing
      the group works on the forked server as it does on `moto_server`.

Only the standard library is imported by `start`: it costs milliseconds.

Both `serve` and `run` make each DynamoDB write atomic, as DynamoDB's are: moto
checks a condition and then writes, with nothing between two threads of its
threaded server, so two conditional PutItems on one item could both pass
their condition (seen: two writers both claiming one version lock).
"""

import json
import os
import signal
import socket
import sys

REGION = "us-east-1"
# The backends the local stack and the tests call (see local-stack/src/).
SERVICES = [
    "cloudformation",
    "cloudwatch",
    "cognito-idp",
    "dynamodb",
    "dynamodbstreams",
    "events",
    "kms",
    "servicediscovery",
    "sns",
    "sqs",
    "ssm",
    "sts",
]


def make_dynamodb_calls_atomic():
    """One lock around every DynamoDB write and read of this process's moto.

    Reads too: moto keeps a table's items in a defaultdict, so reading a
    partition that does not exist (GetItem, Query) inserts an empty one,
    and a TransactWriteItems deep-copying the table at that moment fails
    with "dictionary changed size during iteration" (a 500; seen with
    thousands of items and concurrent readers).
    """
    import functools
    import threading

    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
        "batch_write_item",
        "get_item",
        "query",
        "scan",
        "batch_get_item",
        "transact_get_items",
    ):
        method = getattr(DynamoDBBackend, name)

        @functools.wraps(method)
        def atomic(self, *args, __method=method, **kwargs):
            with lock:
                return __method(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, atomic)


def run(port):
    make_dynamodb_calls_atomic()
    from moto import server

    server.main(["-H", "127.0.0.1", "-p", str(int(port))])


def serve(socket_path):
    # The server ends with the test command that started it.
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    from moto.moto_server.werkzeug_app import create_backend_app

    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    make_dynamodb_calls_atomic()

    apps = {service: create_backend_app(service) for service in SERVICES}
    # The stack's account and region, set up once (empty: each child starts
    # with nothing stored, as a fresh moto_server does).
    for service in SERVICES:
        regions = get_backend(service)[DEFAULT_ACCOUNT_ID]
        try:
            regions[REGION]
        except KeyError:  # a global service (STS)
            regions["global"]

    # Forked children are reaped by the kernel.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    print(f"moto fork server: {len(apps)} services loaded, listening on {socket_path}", flush=True)
    while True:
        connection, _ = listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(connection, 4096, 2)
            request = json.loads(message)
        except (OSError, ValueError) as error:
            print(f"moto fork server: refused a request: {error}", file=sys.stderr, flush=True)
            connection.close()
            continue
        if len(fds) != 2:
            print("moto fork server: a request came without its output", file=sys.stderr, flush=True)
            for fd in fds:
                os.close(fd)
            connection.close()
            continue
        if os.fork() == 0:
            listener.close()
            run_child(connection, fds, request, apps)
        connection.close()
        for fd in fds:
            os.close(fd)


def run_child(connection, fds, request, apps):
    """In the forked child: becomes the requester's moto server; never returns."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Joins the requester's process group, so that a signal to the group
        # (stop, pause, kill) reaches this server too.
        os.setpgid(0, int(request["pgid"]))
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        # IDs moto draws from `random` would repeat in every child otherwise.
        import random

        random.seed()
        connection.sendall(b"forked\n")

        # The requester's end closing means it is gone: so is this server.
        import threading

        def exit_when_requester_ends():
            while connection.recv(64):
                pass
            os._exit(0)

        threading.Thread(target=exit_when_requester_ends, daemon=True).start()

        from moto import server
        from moto.moto_server import werkzeug_app

        # moto's own entry point, with the services' apps already built.
        class Preloaded(werkzeug_app.DomainDispatcherApplication):
            def __init__(self, create_app):
                super().__init__(create_app)
                self.app_instances.update(apps)

        server.DomainDispatcherApplication = Preloaded
        server.main(["-H", "127.0.0.1", "-p", str(int(request["port"]))])
        status = 0
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 0
    except BaseException as error:  # reported in the stack's moto log
        print(f"moto fork server: child failed: {error!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(status)


def start(socket_path, port):
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(socket_path)
    request = json.dumps({"port": int(port), "pgid": os.getpgid(0)}).encode()
    socket.send_fds(connection, [request], [1, 2])
    if not connection.recv(64).startswith(b"forked"):
        sys.exit("moto fork server: no server was forked")
    # Holds the connection until the forked server exits (it holds the other
    # end), and exits then, as `moto_server` would.
    while connection.recv(64):
        pass
    sys.exit("moto fork server: the forked moto server exited")


def main(argv):
    if len(argv) == 3 and argv[1] == "serve":
        serve(argv[2])
    elif len(argv) == 3 and argv[1] == "run":
        run(argv[2])
    elif len(argv) == 4 and argv[1] == "start":
        start(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
