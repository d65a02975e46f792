"""Shared pytest fixtures.

S3 fixtures (`s3_server`, `s3_bucket`): a real moto S3 server on 127.0.0.1 spoken to over HTTP by
plain boto3 clients — no patched client, no in-process mock. Other fixture groups may be added
below; keep each group self-contained.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """`make test` runs two xdist workers with `--dist loadgroup`: every test of the end-to-end demo run
    shares one worker (the demo is run once, not once per worker), a module with a module-scoped fixture
    stays on one worker (the fixture is built once), and every other test goes to whichever worker is free.
    The longest tests (`@pytest.mark.first`) are collected first, then the demo group (one long unit of work),
    so neither runs alone at the end while the other worker idles."""
    def order(item) -> int:
        if item.get_closest_marker("first") is not None:
            return 0
        return 1 if "outputs_demo_project" in item.fixturenames else 2

    items.sort(key=order)  # stable: within each rank the collection order stays
    for item in items:
        if "outputs_demo_project" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("outputs_demo"))
        elif any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


# ---------------------------------------------------------------------------------- S3 (moto server)
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never pick up a developer's real profile, config or session token.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
S3_TEST_ENV_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str  # http://127.0.0.1:<port>

    def client(self):
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server over HTTP for the whole session, with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for k, v in S3_TEST_ENV.items():
        mp.setenv(k, v)
    for k in S3_TEST_ENV_UNSET:
        mp.delenv(k, raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        mp.undo()


@dataclass
class S3Bucket:
    name: str
    client: object
    endpoint_url: str

    def put(self, key: str, body: bytes | str) -> str:
        """Upload one object; returns its ETag (unquoted)."""
        if isinstance(body, str):
            body = body.encode()
        resp = self.client.put_object(Bucket=self.name, Key=key, Body=body)
        return resp["ETag"].strip('"')

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, uniquely named bucket on the moto server (tests never share state)."""
    client = s3_server.client()
    name = f"apportion-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield S3Bucket(name, client, s3_server.endpoint_url)
    bucket = S3Bucket(name, client, s3_server.endpoint_url)
    for key in bucket.keys():
        bucket.delete(key)
    client.delete_bucket(Bucket=name)


# ---------------------------------------------------------------------------------- LLM provider API replay
# A real HTTP server on 127.0.0.1 (http.server in a thread) that replays recorded API pages. Tests script
# responses per (path, page cursor): a list is served in order (429 / 5xx first, then the page), the last
# entry repeating. Every request is recorded (path, query, headers) for assertions.
@dataclass
class ReplayResponse:
    status: int = 200
    body: bytes | str | dict = b""
    headers: dict | None = None


class ReplayServer:
    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qsl, urlsplit

        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qsl(parts.query, keep_blank_values=True)
                server.requests.append({"path": parts.path, "query": query,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}})
                page = dict(query).get("page")
                with server.lock:
                    queue = server.routes.get((parts.path, page))
                    if not queue:
                        resp = ReplayResponse(404, {"error": {"message": f"no route {parts.path} page={page}"}})
                    else:
                        resp = queue.pop(0) if len(queue) > 1 else queue[0]
                body = resp.body
                if isinstance(body, dict):
                    body = json.dumps(body).encode()
                elif isinstance(body, str):
                    body = body.encode()
                self.send_response(resp.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (resp.headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        import json

        self.lock = threading.Lock()
        self.routes: dict[tuple[str, str | None], list[ReplayResponse]] = {}
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, path: str, page: str | None, *responses: ReplayResponse | bytes | str | dict) -> None:
        with self.lock:
            self.routes[(path, page)] = [r if isinstance(r, ReplayResponse) else ReplayResponse(200, r) for r in responses]

    def reset(self) -> None:
        with self.lock:
            self.routes.clear()
            self.requests.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def llm_replay_server():
    server = ReplayServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def llm_api(llm_replay_server):
    """The replay server with no routes and no recorded requests."""
    llm_replay_server.reset()
    yield llm_replay_server
    llm_replay_server.reset()


# ---------------------------------------------------------------------------------- outputs (report, finance pack)
@pytest.fixture(scope="session")
def outputs_demo_project(tmp_path_factory):
    """The demo bill (deterministic CUR 2.0, previous + current month) run end to end by `apportion run --all`
    in a temporary folder: warehouse, finance packs and the HTML report written by the nightly job.
    Returns (config path, parsed --json run summary). Shared by the report and finance-pack tests."""
    import json
    import shutil
    from contextlib import redirect_stdout
    from io import StringIO

    from apportion import cli
    from apportion.demo.generators.aws_cur import demo_months, generate_cur2

    root = tmp_path_factory.mktemp("outputs-demo")
    generate_cur2(root / "bucket", demo_months())
    shutil.copy(REPO_ROOT / "demo" / "taxonomy.yaml", root / "taxonomy.yaml")
    (root / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/cur/apportion-demo\n"
    )
    out = StringIO()
    with redirect_stdout(out):
        code = cli.main(["run", "--config", str(root / "apportion.yaml"), "--all", "--json"])
    assert code == cli.EXIT_OK, out.getvalue()[-2000:]
    return root / "apportion.yaml", json.loads(out.getvalue())


# ---------------------------------------------------------------------------------- cloud billing (Azurite, GCS emulator)
# Azurite (npm `azurite`, blob service only) and gcp-storage-emulator run as real servers on
# 127.0.0.1, spoken to over HTTP by azure-storage-blob and google-cloud-storage. `.ci/run` installs
# Azurite under .cache/azurite; locally: `npm install --prefix .cache/azurite azurite@3.37.0`.
# Without it the Azurite tests skip, except under CI=true where they fail.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # public dev key


def _azurite_binary() -> str | None:
    import shutil

    candidates = [os.environ.get("AZURITE_BLOB_BIN"),
                  str(REPO_ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
                  shutil.which("azurite-blob")]
    return next((c for c in candidates if c and Path(c).exists()), None)


def _missing_service(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true (installed by .ci/run)")
    pytest.skip(f"{what} is not installed")


def _wait_port(port: int, proc, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"emulator did not listen on port {port} within {timeout}s")


@dataclass(frozen=True)
class AzuriteServer:
    blob_endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory):
    """Azurite's blob service (in-memory) for the session; AZURE_STORAGE_CONNECTION_STRING points at it."""
    import subprocess

    binary = _azurite_binary()
    if binary is None:
        _missing_service("Azurite (npm azurite)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
         "--skipApiVersionCheck", "--loose", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
    )
    mp = pytest.MonkeyPatch()
    try:
        _wait_port(port, proc)
        server = AzuriteServer(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
        mp.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
        yield server
    finally:
        mp.undo()
        proc.kill()  # in-memory: nothing to flush; Azurite ignores SIGTERM for ~10 s
        proc.wait(timeout=10)


@pytest.fixture
def azure_container(azurite_server):
    """A fresh container on Azurite (ContainerClient); deleted afterwards."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    container = service.create_container(f"billing-{uuid.uuid4().hex[:12]}")
    yield container
    container.delete_container()


@dataclass(frozen=True)
class GcsEmulator:
    endpoint: str  # http://127.0.0.1:<port>

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="apportion-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator (pip) in memory on 127.0.0.1 for the session."""
    import shutil
    import subprocess

    binary = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator")
    if not Path(binary).exists():
        _missing_service("gcp-storage-emulator (pip)")
    port = _free_port()
    proc = subprocess.Popen([binary, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield GcsEmulator(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh bucket on the GCS emulator (google.cloud.storage.Bucket)."""
    client = gcs_emulator.client()
    bucket = client.create_bucket(f"billing-{uuid.uuid4().hex[:12]}")
    yield bucket
    for blob in client.list_blobs(bucket):
        blob.delete()
    bucket.delete()


# ---------------------------------------------------------------------------------- OpenCost API (replay server)
@dataclass
class OpencostReplay:
    """A real HTTP server on 127.0.0.1 answering OpenCost `/allocation` queries from recorded responses.

    `folder` holds `allocation-<YYYY-MM-DD>.json` files; a query for window `<day>T00:00:00Z,...` gets that
    day's file (an empty allocation set when none was recorded, as OpenCost answers). `requests` records every query (path and parameters); `fail` maps a day to
    an HTTP status to answer instead.
    """

    base_url: str
    folder: Path
    requests: list
    fail: dict


@pytest.fixture
def opencost_server(tmp_path):
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    folder = tmp_path / "opencost-recorded"
    folder.mkdir()
    state = OpencostReplay("", folder, [], {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            url = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            state.requests.append({"path": url.path, "params": params,
                                   "authorization": self.headers.get("Authorization")})
            day = params.get("window", "")[:10]
            if url.path != "/allocation":
                return self._send(404, {"code": 404, "message": "not found"})
            if day in state.fail:
                return self._send(state.fail[day], {"code": state.fail[day], "message": "injected failure"})
            page = folder / f"allocation-{day}.json"
            if not page.is_file():  # OpenCost answers a window without data with an empty set
                return self._send(200, {"code": 200, "data": [{}]})
            body = page.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send(self, status, doc):
            body = _json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------- PostgreSQL (LiteLLM)
# A real PostgreSQL server for the session: initdb + pg_ctl in a temporary folder on a free port (the
# Debian `postgresql` package; .ci/run installs it). As root, the server runs as the `postgres` user.
# Without the binaries the tests skip locally and FAIL under CI=true.
@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"


def _postgres_bindir() -> Path | None:
    import glob
    import shutil as _shutil

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for d in candidates:
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    found = _shutil.which("initdb")
    return Path(found).parent if found and _shutil.which("pg_ctl") else None


@pytest.fixture(scope="session")
def postgres_server():
    import pwd
    import shutil as _shutil
    import subprocess
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="apportion-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    port = _free_port()
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "apportion", "--auth=trust",
                             "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
                             "start"], check=True, capture_output=True)
    try:
        yield PostgresServer("127.0.0.1", port, "apportion")
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        _shutil.rmtree(base, ignore_errors=True)


# The LiteLLM proxy's spend-log table as its Prisma schema creates it (litellm/proxy/schema.prisma, 1.110.x).
LITELLM_SPEND_LOGS_DDL = '''
CREATE TABLE "LiteLLM_SpendLogs" (
    "request_id" TEXT NOT NULL,
    "call_type" TEXT NOT NULL,
    "api_key" TEXT NOT NULL DEFAULT '',
    "spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    "total_tokens" INTEGER NOT NULL DEFAULT 0,
    "prompt_tokens" INTEGER NOT NULL DEFAULT 0,
    "completion_tokens" INTEGER NOT NULL DEFAULT 0,
    "startTime" TIMESTAMP(3) NOT NULL,
    "endTime" TIMESTAMP(3) NOT NULL,
    "request_duration_ms" INTEGER,
    "completionStartTime" TIMESTAMP(3),
    "model" TEXT NOT NULL DEFAULT '',
    "model_id" TEXT DEFAULT '',
    "model_group" TEXT DEFAULT '',
    "custom_llm_provider" TEXT DEFAULT '',
    "api_base" TEXT DEFAULT '',
    "user" TEXT DEFAULT '',
    "metadata" JSONB DEFAULT '{}',
    "cache_hit" TEXT DEFAULT '',
    "cache_key" TEXT DEFAULT '',
    "request_tags" JSONB DEFAULT '[]',
    "team_id" TEXT,
    "organization_id" TEXT,
    "end_user" TEXT,
    "requester_ip_address" TEXT,
    "messages" JSONB DEFAULT '{}',
    "response" JSONB DEFAULT '{}',
    "session_id" TEXT,
    "status" TEXT,
    "mcp_namespaced_tool_name" TEXT,
    "proxy_server_request" JSONB DEFAULT '{}',
    CONSTRAINT "LiteLLM_SpendLogs_pkey" PRIMARY KEY ("request_id")
);
CREATE INDEX "LiteLLM_SpendLogs_startTime_idx" ON "LiteLLM_SpendLogs"("startTime");
'''


@pytest.fixture
def litellm_db(postgres_server):
    """A fresh database holding an empty LiteLLM_SpendLogs table; yields its DSN (no password)."""
    import psycopg

    name = f"litellm_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres_server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(LITELLM_SPEND_LOGS_DDL)
    yield dsn
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
