"""`data.source: hub` against a loopback HTTP server standing in for the Hugging Face hub: every
registered vertical's files and HH are fetched (huggingface_hub's own download code, pointed at the
server by HF_ENDPOINT) and land in the raw layout, parsing to the same records as the real data."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from rlhf_trust import verticals
from rlhf_trust.config import DataConfig
from rlhf_trust.data import records, sources

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def truthful_qa_parquet(raw_json: Path, dest: Path) -> None:
    """The hub's truthful_qa multiple_choice layout (targets as {choices, labels}) of the study's file."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    items = json.loads(raw_json.read_text(encoding="utf-8"))
    rows = [{"question": q["question"],
             **{k: {"choices": list(q[k]), "labels": list(q[k].values())} for k in ("mc1_targets", "mc2_targets")}}
            for q in items]
    pq.write_table(pa.Table.from_pylist(rows), dest)


def hub_content(cfg: DataConfig, real: Path, tmp: Path) -> dict[str, bytes]:
    """URL path -> bytes: each hub file made from the real raw file it becomes."""
    out = {}
    for f in sources.hub_files(cfg):
        src = real / f.dest
        if f.convert is not verticals.copy_file:  # a converted file: served in the hub's own format
            src = tmp / Path(f.path).name
            truthful_qa_parquet(real / f.dest, src)
        out[f"/datasets/{f.repo}/resolve/main/{f.path}"] = src.read_bytes()
    return out


class FakeHub(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    served: ClassVar[list[str]] = []

    def _head(self) -> bytes | None:
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        body = self._head()
        if body is not None:
            self.served.append(self.path)
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(raw_data, tmp_path):
    FakeHub.files = hub_content(DataConfig(), raw_data, tmp_path)
    FakeHub.served = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def run_data(endpoint: str, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text("data: {source: hub, dir: data}\n")
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(cwd / "hf"),
           "HF_HUB_DISABLE_XET": "1"}
    return subprocess.run([sys.executable, "-m", "rlhf_trust.cli", "data", "--no-check"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_hub_source_fetches_every_registered_dataset_into_the_raw_layout(hub, raw_data, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_data(hub, work)
    assert proc.returncode == 0, proc.stderr
    files = sources.hub_files(DataConfig())
    assert f"wrote {len(files)} files to data/ from hub" in proc.stdout
    assert sorted(FakeHub.served) == sorted(FakeHub.files)  # each file fetched once, nothing else
    data = work / "data"
    assert {f.dest for f in files} == {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    assert records.unexpected_files(data) == {}
    for f in files:  # plain files arrive byte for byte
        if f.convert is verticals.copy_file:
            assert (data / f.dest).read_bytes() == (raw_data / f.dest).read_bytes(), f.dest
    assert "fairness" in verticals.names()
    for spec in verticals.specs():  # every registered vertical parses as from the mirror
        assert records.load(spec.dataset, data) == records.load(spec.dataset, raw_data), spec.name
    assert records.hh_pairs(data) == records.hh_pairs(raw_data)


def test_a_file_missing_on_the_hub_is_one_line(hub, tmp_path):
    missing = next(k for k in FakeHub.files if "fairness" in k)
    del FakeHub.files[missing]
    proc = run_data(hub, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "cannot download fairness/fairness_data/" in proc.stderr and "AI-secure/DecodingTrust" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing half-written
