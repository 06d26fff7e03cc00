"""The bulk embed on a real Ray runtime (issue 14) with the tiny real SigLIP2 checkpoint: the same groups, cosines and
vectors as the local path; a worker killed mid-run; a file that kills its decode worker every time; the driver killed
mid-run, then a rerun; two Ray nodes started with `ray start` on this machine; an unreachable cluster.

Ray starts slowly on 2 cores: the in-process tests share one runtime (a session fixture started by the first of
them, after the subprocess tests, so two runtimes never compete for the cores). Under pytest-xdist the whole module
is one group, run in this order by one worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import crashing
import imagegen
import numpy as np
import pytest
import swapping
from support import b, make_library, wait_for

from dedupd import cli, commands
from dedupd.config import load_config
from dedupd.store import PENDING, UNREADABLE, Store

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def config_for(store: Path, model: Path, ray: str | None = None, **more):
    overrides = {"store": str(store), "model.name": str(model), "model.batch_size": 2, "scan.commit_every": 2}
    return load_config(None, {**overrides, "cluster.ray_address": ray, **more})


def groups_of(report: dict, root: Path) -> list:
    """Each group as (keeper, [(duplicate, cosine to 3 places)...]), paths relative to the root."""

    def rel(path: str) -> str:
        return os.path.relpath(path, root)

    return sorted(
        (rel(g["keep"]), sorted((rel(d["path"]), round(d["cosine"], 3)) for d in g["duplicate_details"]))
        for g in report["groups"]
    )


def vectors_of(store: Path, model: str) -> dict[str, np.ndarray]:
    contents, matrix = Store.open(store, create=False).vectors(model)
    return dict(zip(contents, matrix))


def dedupd(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dedupd", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,  # its own process group: the driver and the Ray runtime it starts
        **popen,
    )


def finished(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_siglip2):
    """A planted library (24 distinct photos, copies, near copies, a truncated file) scanned the local way."""
    base = tmp_path_factory.mktemp("ray")
    lib = make_library(base / "photos", distinct=24)
    cfg = config_for(base / "local-store", tiny_siglip2)
    report = base / "local.json"
    assert commands.scan(str(lib.root), cfg, str(report), False, None, echo=lambda s: None) == 0
    model = commands.model_identity(cfg.model)
    return lib, groups_of(json.loads(report.read_text()), lib.root), vectors_of(base / "local-store", model), model


def test_unreachable_cluster_is_one_line_and_exit_2_and_leaves_no_store(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc = cli.main(["scan", str(tmp_path / "photos"), "--store", str(tmp_path / "store"), "--ray", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "cluster.ray_address" in err and "cannot reach" in err
    assert not (tmp_path / "store").exists()


def test_the_daemon_with_an_unreachable_cluster_exits_2_before_it_indexes_anything(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    imagegen.photo(1, (64, 48)).save(photos / "a.jpg")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "dedupd.yaml"
    store = tmp_path / "store"
    config.write_text(f"store: {store}\nroots: [{photos}]\ncluster:\n  ray_address: 127.0.0.1:{port}\n")
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cluster.ray_address" in err and "cannot reach" in err
    assert Store.open(store, create=False).files() == {}


def test_a_bad_address_names_the_key(tmp_path, capsys):
    assert cli.main(["scan", str(tmp_path), "--ray", "nowhere"]) == 2
    assert "cluster.ray_address" in capsys.readouterr().err


@pytest.fixture(scope="class")
def two_nodes():
    """A Ray cluster of two nodes on this machine (`ray start --head`, then `ray start --address`), one CPU each;
    its port. Class-scoped: it stops once TestOnTwoNodes ends, before the in-process runtime starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Its own session folder, so nothing of another Ray on this machine is touched; short, because Ray's sockets live
    # below it and a Unix socket path has at most 107 bytes (tmp_path is too deep: the head then never starts).
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    head = ("--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false")
    nodes = [started(lambda: tcp_open(port) and alive_nodes(port) == 1, *head)]
    try:
        nodes.append(started(lambda: alive_nodes(port) == 2, f"--address=127.0.0.1:{port}"))
        yield port
    finally:
        for node in nodes:
            stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def started(ready, *args: str, tries: int = 2) -> subprocess.Popen:
    """`ray start` a node and wait until ready(); Ray gives a raylet 30 s to register, which a loaded 2-core machine
    can miss: then its `ray start` exits, and it is started once more."""
    for attempt in range(1, tries + 1):
        node = start_node(*args)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and node.poll() is None:
            if ready():
                return node
            time.sleep(0.5)
        stop(node)
        if attempt == tries:
            raise AssertionError(f"ray start {' '.join(args)} did not come up")
    raise AssertionError("unreachable")


def alive_nodes(port: int) -> int:
    code = (
        f"import ray; ray.init(address='127.0.0.1:{port}', log_to_driver=False); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    except subprocess.TimeoutExpired:
        return 0
    return int(out.stdout.strip() or 0)


def start_node(*args: str) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray), "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,
    )


def stop(node: subprocess.Popen | None) -> None:
    """The node's whole process group (its raylet, GCS and workers), by its id: never a `ray stop` of the machine."""
    if node is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(node.pid, sig)
            node.wait(timeout=5)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def versions(table: Path) -> int:
    return len(list((table / "_versions").glob("*.manifest"))) if table.exists() else 0


class TestOnTwoNodes:
    def test_two_ray_nodes_on_this_machine_give_the_local_groups(self, two_nodes, reference, tiny_siglip2, tmp_path):
        lib, groups, _, _ = reference
        report = tmp_path / "report.json"
        args = ["scan", lib.root, "--model", tiny_siglip2, "--store", tmp_path / "store", "--report", report]
        rc, _, err = finished(dedupd(*args, "--batch-size", "2", "--ray", f"127.0.0.1:{two_nodes}", "-v"))
        assert rc == 0, err
        assert "(2 nodes" in err  # the driver saw both nodes before it started the job
        assert "Progress bars disabled" not in err  # Ray Data's note that the bars dedupd turns off are off
        assert groups_of(json.loads(report.read_text()), lib.root) == groups

    def test_driver_killed_mid_run_then_rerun_resumes(self, two_nodes, reference, tiny_siglip2, tmp_path):
        """On the two-node cluster, as on a real one: the cluster outlives its driver, whose job Ray ends. (A killed
        `--ray local` runtime takes nothing with it that a rerun needs: the store is the driver's alone.)"""
        lib, groups, _, _ = reference
        store, report = tmp_path / "store", tmp_path / "report.json"
        config = tmp_path / "c.yaml"
        config.write_text("scan:\n  commit_every: 2\n")
        args = ["scan", lib.root, "--model", tiny_siglip2, "--store", store, "--report", report, "--config", config]
        cluster = ("--ray", f"127.0.0.1:{two_nodes}")
        first = dedupd(*args, "--batch-size", "2", *cluster)
        try:
            wait_for(lambda: versions(store / "vectors.lance") >= 3, timeout=240, what="a first committed chunk")
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the driver's whole process group, mid-run
        rc, _, _ = finished(first)
        assert rc == -signal.SIGKILL and not report.exists()  # killed mid-run, before the report

        rc, out, err = finished(dedupd(*args, *cluster))
        assert rc == 0, err
        assert groups_of(json.loads(report.read_text()), lib.root) == groups
        rc, out, _ = finished(dedupd("status", "--store", store, "--model", tiny_siglip2))
        status = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        # every content embedded but the truncated file's, which is recorded unreadable, as by a local scan
        assert int(status["embedded"]) == int(status["unique contents"]) - len(lib.unreadable)
        assert status["pending"] == "0" and status["unreadable"] == "1 (1 truncated)"


# --- one shared in-process runtime ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_runtime():
    from dedupd.cluster import ray_embed  # sets Ray's environment switches before ray is imported

    ray_embed.start_ray("local", num_cpus=2)
    yield ray_embed.ray
    ray_embed.ray.shutdown()


def test_ray_scan_gives_the_local_groups_cosines_and_vectors(ray_runtime, reference, tiny_siglip2, tmp_path):
    lib, groups, local_vectors, model = reference
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    lines: list[str] = []
    report = tmp_path / "report.json"
    assert commands.scan(str(lib.root), cfg, str(report), False, None, echo=lines.append) == 0
    assert groups_of(json.loads(report.read_text()), lib.root) == groups
    remote = vectors_of(tmp_path / "store", model)
    assert remote.keys() == local_vectors.keys()
    assert min(float(np.dot(remote[c], local_vectors[c])) for c in remote) >= 0.9999
    broken = Store.open(tmp_path / "store", create=False).files()[b(lib.unreadable[0])]
    assert (broken.status, broken.error) == (UNREADABLE, "truncated")  # as locally: recorded with the reason

    lines.clear()  # a rerun embeds only what is missing: here nothing, and no job reaches the cluster
    assert commands.scan(str(lib.root), cfg, str(report), False, None, echo=lines.append) == 0
    assert " 0 embedded" in lines[0]


def test_the_cluster_embeds_while_hashing_goes_on_and_the_driver_holds_a_bounded_number(
    ray_runtime, tiny_siglip2, tmp_path
):
    from dedupd.cluster.ray_embed import RayCluster, RayEmbed
    from dedupd.ingest.pipeline import Counters

    paths = carriers(tmp_path / "photos", 48)
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    handed = 0

    def hashed():
        nonlocal handed
        for work in hashing(paths):
            handed += 1
            yield work

    embed = RayEmbed(RayCluster("local"), cfg, commands.model_identity(cfg.model), in_flight=20)
    assert embed.bound() == 20  # two decode blocks (8) and two model batches (2) fit: not raised
    counters = Counters()
    answered, first, most = 0, 0, 0
    for work in embed.stage(counters)(hashed()):
        assert work.vector is not None and work.record.width == 96
        answered += 1
        first = first or handed
        most = max(most, handed - answered)
    assert answered == counters.embedded == len(paths)
    assert first <= 21 < len(paths)  # the first vector came back while hashing had files left to yield
    assert most <= 21  # the bound, plus the one file the feeder holds while it waits for room


def carriers(photos: Path, count: int) -> list[Path]:
    """`count` small photos in `photos`, as the plan stage's carriers would name them."""
    photos.mkdir()
    paths = [photos / f"p{i:02}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        imagegen.photo(i, (96, 72)).save(path, quality=90)
    return paths


def hashing(paths: list[Path]):
    """The plan stage's carriers, one at a time as hashing yields them."""
    for path in paths:
        yield carrier(path)


def carrier(path: Path):
    from dedupd.ingest.hashing import content_hash
    from dedupd.ingest.pipeline import Work
    from dedupd.store import FileRecord

    return Work(FileRecord.of(b(path), b(path.parent), path.stat(), content=content_hash(path)), carrier=True)


def test_the_read_task_killed_mid_run_is_retried_without_losing_a_file(ray_runtime, tiny_siglip2, tmp_path, caplog):
    from dedupd.cluster.ray_embed import RayCluster, RayEmbed
    from dedupd.ingest.pipeline import Counters

    paths = carriers(tmp_path / "photos", 40)
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    embed = RayEmbed(RayCluster("local"), cfg, commands.model_identity(cfg.model))
    counters, killed = Counters(), list[int]()

    def hashed_then_kill():
        for i, work in enumerate(hashing(paths)):
            if i == 24:  # 24 rows read, most answered, more to come: the read task waits for them, and is killed
                wait_for(lambda: counters.embedded >= 16, 120, "the first rows' answers")
                killed.extend(wait_for(lambda: titled("ReadFeedSource"), 60, "the read task"))
                os.kill(killed[0], signal.SIGKILL)
            yield work

    with caplog.at_level("INFO", logger="dedupd"):
        answered = list(embed.stage(counters)(hashed_then_kill()))
    assert len(killed) == 1, "no read task was running to kill"
    assert len(answered) == counters.embedded == len(paths) and all(w.vector is not None for w in answered)
    # Ray Data retried the read task and it read the same rows again: no file waited for an answer that never came.
    assert not no_answer_logs(caplog)


def test_the_same_path_handed_twice_comes_back_twice(ray_runtime, tiny_siglip2, tmp_path):
    """Two carriers naming one file: both come out with its vector, as the local stages hand back both."""
    from dedupd.ingest.pipeline import Counters

    paths = carriers(tmp_path / "photos", 16)
    handed = [*hashing(paths), carrier(paths[3])]
    out = list(ray_embed_for(tiny_siglip2, tmp_path).stage(Counters())(iter(handed)))
    assert sorted(map(id, out)) == sorted(map(id, handed)), f"{len(out)} Works out for {len(handed)} in"
    assert all(w.vector is not None for w in out)


def test_files_handed_on_after_the_feed_and_its_read_task_died_together_are_answered_in_the_pass(
    ray_runtime, tiny_siglip2, tmp_path, caplog
):
    """The feed actor and the read task killed together (both num_cpus=0, they may share a node that dies): the
    driver sees the restarted feed and hands on again what it held, and the retried read task's first rows, which
    Ray drops as outputs it already has, are only placeholders. Every file is answered in the pass itself."""
    from dedupd.ingest.pipeline import Counters

    paths = carriers(tmp_path / "photos", 48)
    counters, killed, handed = Counters(), list[int](), list[object]()

    def hashed_then_kill():
        for i, work in enumerate(hashing(paths)):
            if i == 24:
                wait_for(lambda: counters.embedded >= 16, 120, "the first answers")
                killed.extend(pid for pid, title in ray_workers() if "ReadFeedSource" in title or "FeedQueue" in title)
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
            handed.append(work)
            yield work

    with caplog.at_level("INFO", logger="dedupd"):
        out = list(ray_embed_for(tiny_siglip2, tmp_path).stage(counters)(hashed_then_kill()))
    assert len(killed) == 2, "the read task and the feed were not both running"
    assert sorted(map(id, out)) == sorted(map(id, handed)) and all(w.vector is not None for w in out)
    assert not no_answer_logs(caplog)  # none left for the one-file probes and a second pass


def test_the_feed_killed_with_a_bound_of_unread_rows_does_not_stall_the_pass(ray_runtime, tiny_siglip2, tmp_path):
    """The feed restarted while it held a whole bound of rows its read task had not taken (a busy cluster holds the
    read task back the same way): the driver's bound is full of files the new feed never got. The driver must hand
    them on again, not wait STALL_S for the bound to double."""
    from dedupd.cluster.ray_embed import FEED_WAIT_S, STALL_S
    from dedupd.ingest.pipeline import Counters

    paths = carriers(tmp_path / "photos", 40)
    held: list[int] = []

    def hashed_then_hold():
        for i, work in enumerate(hashing(paths)):
            if i == 1:  # the pass has started: hold its read task still before any row reaches it
                held.extend(wait_for(lambda: titled("ReadFeedSource"), 120, "the read task"))
                os.kill(held[0], signal.SIGSTOP)
                time.sleep(FEED_WAIT_S + 0.5)  # its take in flight comes back empty
            yield work

    stage = ray_embed_for(tiny_siglip2, tmp_path, in_flight=20).stage(Counters())(hashed_then_hold())
    out: list = []
    consumer = threading.Thread(target=lambda: out.extend(stage), daemon=True)
    consumer.start()
    try:
        wait_for(lambda: "ray-feed" in waiting_threads(), 120, "the feeder to wait for room")
        feed = wait_for(lambda: titled("FeedQueue"), 60, "the feed's process")
        time.sleep(1)  # the puts queued for it land
        os.kill(feed[0], signal.SIGKILL)
        wait_for(lambda: [p for p in titled("FeedQueue") if p not in feed], 60, "the restarted feed")
    finally:
        os.kill(held[0], signal.SIGCONT)
    resumed = time.monotonic()
    consumer.join(STALL_S * 2)
    took = time.monotonic() - resumed
    assert len(out) == len(paths) and all(w.vector is not None for w in out)
    assert took < STALL_S / 2, f"the pass took {took:.0f} s after the feed's restart (STALL_S is {STALL_S:.0f} s)"


def ray_embed_for(tiny_siglip2: Path, tmp_path: Path, **options):
    from dedupd.cluster.ray_embed import RayCluster, RayEmbed

    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    return RayEmbed(RayCluster("local"), cfg, commands.model_identity(cfg.model), **options)


def titled(part: str) -> list[int]:
    """The pids of this session's ray:: workers whose title names `part` (an actor class, a task)."""
    return [pid for pid, title in ray_workers() if part in title]


def no_answer_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "got no answer" in r.getMessage()]


def test_closing_the_stage_while_the_feeder_waits_for_room_ends_its_threads(ray_runtime, tiny_siglip2, tmp_path):
    from dedupd.cluster.ray_embed import RayCluster, RayEmbed
    from dedupd.ingest.pipeline import Counters

    paths = carriers(tmp_path / "photos", 40)
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    embed = RayEmbed(RayCluster("local"), cfg, commands.model_identity(cfg.model), in_flight=20)
    handed: list[object] = []
    stage = embed.stage(Counters())(handed.append(w) or w for w in hashing(paths))
    next(stage)  # the consumer takes one answer, then no more: 20 held, one answered, one more held, one waiting
    wait_for(lambda: len(handed) >= 22 and "ray-feed" in waiting_threads(), timeout=60, what="the feeder to wait")
    stage.close()  # the consumer goes away (say, the run failed further down the pipeline)
    assert "ray-feed-watch" not in waiting_threads(True)  # joined before close() returns
    wait_for(lambda: not {"ray-feed", "ray-stream"} & set(waiting_threads(True)), 10, "the threads to end")


def waiting_threads(all_of_them: bool = False) -> list[str]:
    """The names of the stage's live threads; only those blocked in _InFlight.admit unless `all_of_them`."""
    frames = sys._current_frames()
    names = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        stack = []
        while frame is not None:
            stack.append(frame.f_code.co_name)
            frame = frame.f_back
        if all_of_them or "admit" in stack:
            names.append(thread.name)
    return names


def test_the_bound_on_files_in_flight_waits_for_answers_and_doubles_when_none_come():
    from dedupd.cluster.ray_embed import _InFlight
    from dedupd.ingest.pipeline import Work
    from dedupd.store import FileRecord

    def work(i: int) -> Work:
        return Work(FileRecord(f"/p/{i}".encode(), b"/p", 1, 1, 1, i), carrier=True)

    held = _InFlight(2, stall_s=0.3)
    assert held.admit(work(0), lambda: False) and held.admit(work(1), lambda: False) and held.full()
    threading.Timer(0.1, held.answer, args=(b"/p/0",)).start()
    began = time.monotonic()
    assert held.admit(work(2), lambda: False)  # waited for the answer, not for the stall
    assert time.monotonic() - began < 0.3 and held.bound == 2
    began = time.monotonic()
    assert held.admit(work(3), lambda: False)  # nothing answered (say, a block lost): after the stall, room doubles
    assert time.monotonic() - began >= 0.3 and held.bound == 4
    assert not held.admit(work(4), lambda: True) and b"/p/4" not in held.works  # given up: not held


def test_a_busy_ray_worker_killed_mid_run_changes_nothing(ray_runtime, reference, tiny_siglip2, tmp_path):
    lib, groups, _, _ = reference
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    report = tmp_path / "report.json"
    killed: list[str] = []
    killer = threading.Thread(target=kill_a_busy_worker, args=(killed,), daemon=True)
    killer.start()
    assert commands.scan(str(lib.root), cfg, str(report), False, None, echo=lambda s: None) == 0
    killer.join(timeout=1)
    assert killed, "no busy ray:: worker was seen to kill"
    assert groups_of(json.loads(report.read_text()), lib.root) == groups
    store = Store.open(tmp_path / "store", create=False)
    contents = {f.content for f in store.files().values() if f.status != UNREADABLE}
    assert store.vector_contents(commands.model_identity(cfg.model)) == contents  # nothing lost...
    assert store.row_counts()["vectors"] == len(contents)  # ...nor stored twice


def test_a_file_that_kills_its_decode_worker_is_the_only_one_blamed(
    ray_runtime, reference, tiny_siglip2, tmp_path, caplog
):
    from ray import cloudpickle

    from dedupd.cluster.ray_embed import DECODE_BATCH, DIED_ON_CLUSTER

    lib, groups, local_vectors, model = reference
    photos = tmp_path / "photos"
    shutil.copytree(lib.root, photos)
    crash = photos / "camera" / "crash_50.jpg"  # decoded in one task with other, innocent files
    imagegen.photo(50, (320, 240)).save(crash, quality=92)
    assert len(local_vectors) > DECODE_BATCH
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    report = tmp_path / "report.json"
    cloudpickle.register_pickle_by_value(crashing)  # Ray's workers cannot import the tests' modules by name
    try:
        with caplog.at_level("INFO", logger="dedupd"):
            rc = commands.scan(
                str(photos), cfg, str(report), False, None, echo=lambda s: None, decode=crashing.decode_or_die
            )
    finally:
        cloudpickle.unregister_pickle_by_value(crashing)
    assert rc == 0
    # The crash failed its whole task, innocent files with it, and those were decoded again one per task.
    left = [int(r.getMessage().split()[0]) for r in caplog.records if "decoding each alone" in r.getMessage()]
    assert len(left) == 1 and left[0] > 1
    files = Store.open(tmp_path / "store", create=False).files()
    assert (files[b(crash)].status, files[b(crash)].error) == (UNREADABLE, DIED_ON_CLUSTER)
    assert not [f.path for f in files.values() if f.status == PENDING]
    assert vectors_of(tmp_path / "store", model).keys() == local_vectors.keys()  # every other content: embedded
    assert groups_of(json.loads(report.read_text()), photos) == groups


def test_a_photo_saved_over_after_its_hash_lends_its_vector_to_no_content(ray_runtime, tiny_siglip2, tmp_path):
    """The decode task reads other bytes than the driver hashed (tests/swapping.py rewrites the file first): the
    vector it brings back is of no content the driver knows, so none is stored, and the path is read again later."""
    from ray import cloudpickle

    from dedupd.ingest.hashing import content_hash
    from dedupd.ingest.pipeline import CHANGED_WHILE_READ

    photos = tmp_path / "photos"
    photos.mkdir()
    swapped, other = photos / "swapped.jpg", photos / "other.jpg"
    imagegen.photo(61, (320, 240)).save(swapped, quality=92)
    imagegen.photo(62, (320, 240)).save(other, quality=92)
    (photos / "swapped.jpg.next").write_bytes(other.read_bytes())
    old = content_hash(swapped)
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    cloudpickle.register_pickle_by_value(swapping)
    try:
        rc = commands.scan(str(photos), cfg, None, False, None, echo=lambda s: None, decode=swapping.decode_swapped)
    finally:
        cloudpickle.unregister_pickle_by_value(swapping)
    assert rc == 0
    store = Store.open(tmp_path / "store", create=False)
    record = store.files()[b(swapped)]
    assert (record.content, record.status, record.error) == (old, UNREADABLE, CHANGED_WHILE_READ)
    assert store.vector_contents(commands.model_identity(cfg.model)) == {content_hash(other)}


def test_a_stop_ends_the_search_for_files_that_kill_their_decoder(ray_runtime, tiny_siglip2, tmp_path):
    from ray import cloudpickle

    from dedupd.cluster.ray_embed import PROBE_WINDOW, RayCluster, RayEmbed

    crashes = [b(tmp_path / f"crash_{i}.jpg") for i in range(PROBE_WINDOW + 1)]  # two windows; never opened
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local")
    stop = threading.Event()
    embed = RayEmbed(RayCluster("local"), cfg, commands.model_identity(cfg.model), stop, crashing.decode_or_die)
    cloudpickle.register_pickle_by_value(crashing)
    try:
        stop.set()
        assert embed._guilty(crashes) == []  # stopped before the first window: nothing probed, nobody blamed
        stop.clear()
        assert embed._guilty(crashes[-1:]) == crashes[-1:]  # the same probe, not stopped: the file is found
    finally:
        cloudpickle.unregister_pickle_by_value(crashing)


def kill_a_busy_worker(killed: list[str], timeout: float = 240) -> None:
    """SIGKILL the first ray:: worker of this session seen running one of dedupd's batches (its process title names
    the task while it runs, and reads IDLE between tasks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not killed:
        for pid, title in ray_workers():
            if "ModelReplica).submit" in title or "decode_batch" in title:
                os.kill(pid, signal.SIGKILL)
                killed.append(title)
                return
        time.sleep(0.05)


def ray_workers() -> list[tuple[int, str]]:
    """(pid, process title) of the ray:: workers that are this process's descendants (its raylet's workers)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    parents, titles = {}, {}
    for line in out.splitlines():
        pid, ppid, args = line.strip().split(None, 2) + [""] * (3 - len(line.strip().split(None, 2)))
        parents[int(pid)], titles[int(pid)] = int(ppid), args
    ours = []
    for pid, title in titles.items():
        walker = pid
        while walker in parents and walker not in (0, 1, os.getpid()):
            walker = parents[walker]
        if walker == os.getpid() and title.startswith("ray::"):
            ours.append((pid, title))
    return ours


def test_nothing_imports_ray_without_an_address():
    code = (
        "import sys, dedupd.cli, dedupd.commands, dedupd.service.daemon, dedupd.cluster.session\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ray_not_installed_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a NAS install without the ray extra
    monkeypatch.delitem(sys.modules, "dedupd.cluster.ray_embed", raising=False)
    rc = cli.main(["scan", str(tmp_path / "photos"), "--store", str(tmp_path / "store"), "--ray", "local"])
    assert rc == 2 and "uv sync --extra ray" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
    shutil.rmtree(tmp_path / "photos")


def test_the_daemon_embeds_its_first_reconcile_on_ray_and_later_changes_here(
    ray_runtime, reference, tiny_siglip2, tmp_path, caplog
):
    from dedupd.service.daemon import Service

    lib, _, local_vectors, model = reference
    photos = tmp_path / "photos"
    shutil.copytree(lib.root, photos)
    cfg = config_for(tmp_path / "store", tiny_siglip2, "local", roots=[str(photos)], **{"watch.settle_seconds": 0.3})
    service = Service(cfg)
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(service.run()), daemon=True)
    with caplog.at_level("INFO", logger="dedupd"):
        thread.start()
        try:
            wait_for(lambda: getattr(service, "health", None) and service.health.phase == "watching", timeout=240)
            assert vectors_of(tmp_path / "store", model).keys() == local_vectors.keys()
            late = photos / "camera" / "late.jpg"
            imagegen.photo(99, (320, 240)).save(late, quality=92)  # a new content, after the bulk phase
            wait_for(lambda: len(vectors_of(tmp_path / "store", model)) == len(local_vectors) + 1, timeout=120)
        finally:
            service.stop.set()
            thread.join(60)
    assert exit_codes == [0]
    on_ray = [r.getMessage() for r in caplog.records if "on the Ray cluster" in r.getMessage()]
    assert len(on_ray) == 1 and on_ray[0].startswith("embedding new images")  # one pass; the late one: embedded here


@pytest.mark.parametrize(
    ("gpus", "cpus", "overrides", "expected"),
    [
        (8, 64, {}, (8, 1, 8)),  # one replica per GPU
        (8, 64, {"model.gpus": 2}, (2, 1, 2)),  # --gpus 2
        (8, 64, {"model.gpus": 0}, (15, 4, 0)),  # --gpus 0: CPU actors of 4 cores, as locally the CPU
        (0, 2, {}, (1, 1, 0)),  # the tests' runtime: one 1-core replica, one core left for decoding
        (0, 16, {"model.threads": 8}, (1, 8, 0)),
        (8, 64, {"model.precision": "int8"}, (15, 4, 0)),  # int8 has CPU kernels only: CPU actors, as locally
    ],
)
def test_model_replicas_follow_the_gpus_and_the_model_settings(gpus, cpus, overrides, expected):
    from dedupd.cluster.ray_embed import Resources, _actor_config, _replicas, usable

    cfg = load_config(None, overrides)
    resources = usable(Resources(gpus=gpus, cpus=cpus, nodes=1), cfg)
    replicas, per_replica = _replicas(resources, cfg)
    assert (replicas, per_replica, resources.gpus) == expected
    actor = _actor_config(cfg, resources, per_replica).model
    assert (actor.gpus, actor.threads) == ((None, None) if resources.gpus else (0, per_replica))


def test_the_fast_preset_resolves_for_where_the_replicas_run_not_for_the_driver():
    from dedupd.cluster.ray_embed import Resources, settled_for
    from dedupd.model.settings import cpu_has_amx

    fast = load_config(None, {"model.preset": "fast"})
    assert settled_for(fast, Resources(gpus=4, cpus=64, nodes=2)).model.precision == "float"  # bf16 on the GPUs
    on_cpus = settled_for(fast, Resources(gpus=0, cpus=64, nodes=2)).model.precision
    assert on_cpus == ("float" if cpu_has_amx() else "int8")  # as on this machine's CPU
    by_hand = load_config(None, {"model.preset": "fast", "model.precision": "int8"})
    assert settled_for(by_hand, Resources(gpus=4, cpus=64, nodes=2)).model.precision == "int8"
    default = load_config(None, {})
    assert settled_for(default, Resources(gpus=4, cpus=64, nodes=2)) == default


def test_a_gpu_replica_loads_the_fast_preset_under_the_drivers_key_whatever_the_drivers_own_device(tiny_siglip2):
    """The driver here has no GPU (the fast preset alone would take int8 on this CPU unless it has AMX); settled for a
    GPU cluster, the key is the float one and the replica (in this process, on the CPU, as CUDA is absent) loads the
    same settings rather than resolving the preset for its own machine."""
    from dedupd.cluster.ray_embed import ModelReplica, Resources, _actor_config, settled_for
    from dedupd.model.loader import LazyEmbedder

    gpus = Resources(gpus=2, cpus=16, nodes=2)
    cfg = settled_for(load_config(None, {"model.name": str(tiny_siglip2), "model.preset": "fast"}), gpus)
    key = LazyEmbedder(cfg).model_id
    assert key.endswith("+fast+patches64")  # no +int8: the replicas run bf16 on their GPUs
    replica = ModelReplica(_actor_config(cfg, gpus, 1), key)  # raises when it resolves another key
    assert replica.model.get().model_id == key


def test_a_replica_with_another_checkpoint_says_what_to_install():
    from dedupd.cluster.ray_embed import model_mismatch

    text = model_mismatch("gpu1", "other@def", "ckpt@abc")
    assert "same checkpoint at the same path" in text and "gpu1" in text
