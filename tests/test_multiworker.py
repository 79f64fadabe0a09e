"""Multi-worker training on one machine: real worker processes with TF_CONFIG on localhost.

TensorFlow's own multi_process_runner needs bazel, so these start plain
processes, as scripts/run_multiworker_local.sh does (and one test runs that
script itself).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from configs import test as test_config
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer.cloud import local_cluster
from tests import helpers
from tests.helpers import REPO_ROOT

LAUNCHER = os.path.join(REPO_ROOT, "scripts", "run_multiworker_local.sh")
_MULTI_WORKER = "--config.runtime.strategy=multi_worker_mirrored"
# Everything the chief may leave in its workdir.
# trainer.lock: the chief's one-writer lock on the workdir.
_CHIEF_FILES = {"config.json", "config_history.json", "checkpoints", "train", "eval",
                "saved_model", "metrics.json", "plots", "history.json", "trainer.lock"}


def _private_network_available():
  """Whether the launcher can give its workers a network namespace of their own here."""
  command = ["unshare", "--net", *([] if os.getuid() == 0 else ["--map-root-user"]), "true"]
  try:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0
  except OSError:  # No unshare (not Linux, or util-linux missing).
    return False


# The launcher refuses to expose its workers unless asked; where it cannot
# isolate them, the tests that are not about isolation ask.
_LAUNCHER_NETWORK = {"LOCAL_CLUSTER_NETWORK": "private" if _private_network_available() else "host"}


def _environment(scratch):
  # TMPDIR: where non-chief tasks put their throw-away checkpoints.
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(scratch),
              PYTHON=sys.executable, **_LAUNCHER_NETWORK)


def _start_workers(workdir, scratch, logs_dir, *flags):
  processes = []
  for index, tf_config in enumerate(local_cluster.tf_configs(2)):
    log = open(logs_dir / f"worker{index}.log", "w")  # pylint: disable=consider-using-with
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
         f"--workdir={workdir}", _MULTI_WORKER, *flags],
        cwd=REPO_ROOT, env=dict(_environment(scratch), TF_CONFIG=tf_config),
        stdout=log, stderr=subprocess.STDOUT))
  return processes


def _wait_for(condition, processes, timeout_seconds, what):
  deadline = time.time() + timeout_seconds
  while not condition():
    exited = [process.returncode for process in processes if process.poll() is not None]
    assert time.time() < deadline and not exited, f"no {what}; exit codes {exited}"
    time.sleep(0.1)


def _task_lines(output, pattern):
  """{task: first match of `pattern`} over the launcher's "[worker N] ..." lines."""
  found = {}
  for line in output.splitlines():
    match = re.match(r"\[worker (\d)\] .*?" + pattern, line)
    if match:
      found.setdefault(int(match.group(1)), match.groups()[1:])
  return found


@pytest.mark.slow
def test_interrupted_two_worker_run_resumes_and_only_the_chief_writes(tmp_path):
  workdir, scratch = tmp_path / "workdir", tmp_path / "scratch"
  scratch.mkdir()
  # 128-step epochs: the kill must land before the chief saves epoch 2, which a
  # 32-step epoch can finish while a loaded machine delays this test's polling.
  flags = ["--config.train.num_epochs=3", "--config.train_split=train[:8192]"]

  # Two workers, killed together right after the chief saved epoch 1.
  processes = _start_workers(workdir, scratch, tmp_path, *flags)
  try:
    _wait_for((workdir / "checkpoints" / "ckpt-128.index").exists, processes, 180,
              "checkpoint of epoch 1")
  finally:
    for process in processes:
      process.kill()
      process.wait()
  assert not (workdir / "checkpoints" / "ckpt-256.index").exists()
  assert not (workdir / "saved_model").exists()
  # kill -9 can hit worker 1 inside its own save: only what it leaves then may remain.
  scratch_after_kill = {name for name in os.listdir(scratch) if name.startswith("dae-trainer-")}

  # Started again with the launcher: both tasks resume at epoch 2 and finish.
  result = subprocess.run(
      [LAUNCHER, "2", "--config=configs/test.py", f"--workdir={workdir}", *flags],
      cwd=REPO_ROOT, env=_environment(scratch), capture_output=True, text=True, timeout=300)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-3000:]
  resumed = _task_lines(output, r"(worker \d) resumed from (\S+)\.")
  assert sorted(resumed) == [0, 1]
  assert all(path.endswith(os.path.join("checkpoints", "ckpt-128")) for _, path in resumed.values())
  resumed = _task_lines(output, r"training \S+ \([\d,]+ parameters\): epochs (2\.\.3)")
  assert set(resumed.values()) == {("2..3",)}
  fingerprints = _task_lines(output, r"finished at step (384): .*; weights fingerprint (\w+)")
  assert sorted(fingerprints) == [0, 1]
  assert fingerprints[0] == fingerprints[1]  # Both tasks ended with identical weights.

  # Only the chief wrote, and no worker scratch directory remains.
  names = set(os.listdir(workdir))
  assert {name for name in names if not name.startswith("events.out")} == _CHIEF_FILES
  assert {name for name in os.listdir(scratch)
          if name.startswith("dae-trainer-")} == scratch_after_kill
  history = json.loads((workdir / "history.json").read_text())
  assert [entry["epoch"] for entry in history] == [1, 2, 3]

  # The chief's SavedModel denoises.
  config = test_config.get_config()
  data = data_source.create_data_source(config)
  noisy, clean = pipeline.first_eval_examples(data, config, 64)
  loaded = tf.saved_model.load(str(workdir / "saved_model"))
  denoised = loaded.signatures["serving_default"](images=noisy)["denoised"]
  psnr = lambda images: float(tf.reduce_mean(tf.image.psnr(clean, images, max_val=1.0)))
  assert psnr(denoised) > psnr(noisy) + 0.5


@pytest.mark.slow  # Worker processes: CI runs it in make test-slow.
def test_a_killed_worker_stops_the_other_with_one_line_naming_it(tmp_path):
  workdir, scratch = tmp_path / "workdir", tmp_path / "scratch"
  scratch.mkdir()
  processes = _start_workers(workdir, scratch, tmp_path, "--config.train.num_epochs=50")
  chief, worker = processes
  try:
    _wait_for(lambda: "epoch 1/50" in (tmp_path / "worker0.log").read_text(), processes, 180,
              "first epoch")
    worker.send_signal(signal.SIGKILL)
    killed_at = time.time()
    chief.wait(timeout=150)
    seconds = time.time() - killed_at
  finally:
    for process in processes:
      process.kill()
      process.wait()
  last_line = (tmp_path / "worker0.log").read_text().strip().splitlines()[-1]
  assert chief.returncode not in (0, None)
  assert seconds < 120, seconds
  assert last_line.startswith("dae-trainer: worker 0 lost contact with worker 1"), last_line
  assert "Restart every task" in last_line


def test_tf_configs_describe_one_cluster_of_distinct_ports():
  configs = [json.loads(tf_config) for tf_config in local_cluster.tf_configs(3)]
  workers = configs[0]["cluster"]["worker"]
  assert len(set(workers)) == 3 and all(address.startswith("localhost:") for address in workers)
  assert [config["cluster"]["worker"] for config in configs] == [workers] * 3
  assert [config["task"] for config in configs] == [
      {"type": "worker", "index": index} for index in range(3)]
  vertex_style = [json.loads(tf_config) for tf_config in local_cluster.tf_configs(3, True)]
  assert [len(vertex_style[0]["cluster"][job]) for job in ("chief", "worker")] == [1, 2]
  assert [config["task"] for config in vertex_style] == [
      {"type": "chief", "index": 0}, {"type": "worker", "index": 0},
      {"type": "worker", "index": 1}]
  with pytest.raises(ValueError, match="num_workers=0"):
    local_cluster.tf_configs(0)


@pytest.mark.parametrize("arguments, python, message", [
    ([], None, "missing N, the number of workers"),
    (["two"], None, "N='two' is not a positive number of workers"),
    (["abc"], None, "N='abc' is not a positive number of workers"),
    (["0"], None, "N='0' is not a positive number of workers"),
    (["65"], None, "N=65 workers is more than this launcher runs on one machine (1..64)"),
    (["99999999999999999999999"], None, "N=99999999999999999999999 workers is more than"),
    # The helper (loopback, port picking) cannot run: one line, not "unbound
    # variable" and a hang.
    (["2"], "/nonexistent/python", "/nonexistent/python -m trainer.cloud.local_cluster"),
])
def test_launcher_rejects_a_bad_worker_count_or_python_in_one_line(arguments, python, message):
  environment = dict(os.environ, **_LAUNCHER_NETWORK, **({"PYTHON": python} if python else {}))
  result = subprocess.run([LAUNCHER, *arguments], capture_output=True, text=True, timeout=30,
                          env=environment)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert message in result.stderr


@pytest.mark.parametrize("network, flags, message", [
    ("none", [], "LOCAL_CLUSTER_NETWORK='none' is neither private"),
    # The private namespace has no network beyond loopback.
    ("private", ["--workdir=gs://bucket/run"], "gs:// paths need a network"),
])
def test_launcher_rejects_a_bad_network_choice_in_one_line(network, flags, message):
  result = subprocess.run([LAUNCHER, "2", *flags], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, LOCAL_CLUSTER_NETWORK=network), check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert message in result.stderr


def _listening_hosts(net_dir, port):
  """The local addresses (hex, as the kernel prints them) listening on TCP `port` in the
  network namespace whose /proc/<pid>/net directory is `net_dir`."""
  hosts = []
  for table in ("tcp", "tcp6"):
    with open(os.path.join(net_dir, table)) as file:
      for line in file.read().splitlines()[1:]:
        local_address, state = line.split()[1], line.split()[3]
        host, hex_port = local_address.rsplit(":", 1)
        if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN.
          hosts.append(host)
  return hosts


def _process_environment(pid):
  with open(f"/proc/{pid}/environ", "rb") as file:
    return dict(entry.split(b"=", 1) for entry in file.read().split(b"\0") if b"=" in entry)


@pytest.mark.slow
def test_launcher_workers_are_reachable_over_loopback_only(tmp_path):
  """TensorFlow listens on every interface ([::]:port) whatever TF_CONFIG says; the launcher's
  workers do so in a namespace whose only interface is loopback, invisible from this one."""
  if not _private_network_available():
    helpers.skip_unless_ci("no network namespace can be created here (unshare --net fails)")
  launcher = subprocess.Popen(
      [LAUNCHER, "2", "--config=configs/test.py", f"--workdir={tmp_path / 'w'}"],
      cwd=REPO_ROOT, env=dict(_environment(tmp_path), LOCAL_CLUSTER_NETWORK="private"),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    started = launcher.stderr.readline()
    assert "in a private network namespace, reachable over loopback only" in started, started
    pids = re.search(r"\(pids (\d+) (\d+)\)", started).groups()
    checked = []
    for pid in pids:
      # The launcher's forked shell sets TF_CONFIG when it execs the worker.
      _wait_for(lambda pid=pid: b"TF_CONFIG" in _process_environment(pid), [launcher], 60,
                f"TF_CONFIG of worker pid {pid}")
      tf_config = json.loads(_process_environment(pid)[b"TF_CONFIG"])
      address = tf_config["cluster"]["worker"][tf_config["task"]["index"]]
      port = int(address.rsplit(":", 1)[1])
      net_dir = f"/proc/{pid}/net"
      _wait_for(lambda net_dir=net_dir, port=port: _listening_hosts(net_dir, port), [launcher], 180,
                f"gRPC server of worker pid {pid} on port {port}")
      assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
      with open(os.path.join(net_dir, "dev")) as file:
        interfaces = [line.split(":")[0].strip() for line in file.read().splitlines()[2:]]
      assert interfaces == ["lo"]
      # Not listening in this (the machine's) namespace, on any address.
      assert _listening_hosts("/proc/self/net", port) == []
      checked.append((port, _listening_hosts(net_dir, port)))
    assert len(checked) == 2, checked
    assert launcher.wait(timeout=300) == 0, launcher.stderr.read()[-3000:]
  finally:
    if launcher.poll() is None:
      launcher.terminate()
      launcher.wait(timeout=60)


def test_launcher_passes_bash_and_shellcheck():
  subprocess.run(["bash", "-n", LAUNCHER], check=True)
  result = subprocess.run(["shellcheck", LAUNCHER], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.slow  # Worker processes: CI runs it in make test-slow.
def test_launcher_stops_the_other_workers_when_one_fails(tmp_path):
  """A bad flag fails every worker at once; the launcher exits non-zero and says which."""
  result = subprocess.run(
      [LAUNCHER, "2", "--config=configs/test.py", f"--workdir={tmp_path / 'w'}",
       "--config.train.batch_size=0"],
      cwd=REPO_ROOT, env=_environment(tmp_path), capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert re.search(r"\[worker [01]\] dae-trainer: train.batch_size=0 must be > 0", result.stdout)
  assert re.search(r"\[launcher\] worker [01] exited with status 1", result.stderr)
  assert not (tmp_path / "w").exists()
