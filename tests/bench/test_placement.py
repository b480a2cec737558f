"""How many runs at a time and on which GPU: the assignment logic of --jobs (no GPU here)."""

import pytest

from attnzoo.bench.placement import WorkerGroup, parse_jobs, physical_cores, plan_workers


def test_auto_on_cpu_is_one_run_per_physical_core_divided_by_threads():
    assert plan_workers(None, "cpu", threads=1, cores=4) == [WorkerGroup(4)]
    assert plan_workers(None, "cpu", threads=2, cores=4) == [WorkerGroup(2)]
    assert plan_workers(None, "cpu", threads=8, cores=4) == [WorkerGroup(1)]
    assert plan_workers(3, "cpu", threads=1, cores=1) == [WorkerGroup(3)]  # asked: given


def test_auto_on_cuda_is_one_worker_group_per_visible_gpu():
    groups = plan_workers(None, "cuda", threads=1, gpu_count=2, runs_per_gpu=3)
    assert groups == [WorkerGroup(3, "0"), WorkerGroup(3, "1")]
    # Fewer jobs than slots: spread over the GPUs in turn, not piled on the first.
    assert plan_workers(3, "cuda", 1, gpu_count=2, runs_per_gpu=3) == [
        WorkerGroup(2, "0"),
        WorkerGroup(1, "1"),
    ]
    assert plan_workers(1, "cuda", 1, gpu_count=4) == [WorkerGroup(1, "0")]


def test_workers_see_the_gpus_this_process_was_given():
    # CUDA_VISIBLE_DEVICES=4,6: device 0 here is physical GPU 4, so a worker pinned to it
    # must be given "4", not "0".
    groups = plan_workers(None, "cuda", 1, gpu_count=2, cuda_visible="4,6")
    assert groups == [WorkerGroup(1, "4"), WorkerGroup(1, "6")]
    assert plan_workers(None, "cuda", 1, gpu_count=1, cuda_visible="GPU-abc,GPU-def") == [
        WorkerGroup(1, "GPU-abc")
    ]


def test_an_explicit_gpu_keeps_every_run_on_it():
    assert plan_workers(None, "cuda:1", 1, gpu_count=2, runs_per_gpu=2) == [WorkerGroup(2)]
    with pytest.raises(ValueError, match="--runs-per-gpu"):
        plan_workers(3, "cuda:1", 1, gpu_count=2, runs_per_gpu=2)


def test_impossible_requests_are_errors():
    with pytest.raises(ValueError, match=r"2 visible GPU\(s\) x --runs-per-gpu 1"):
        plan_workers(3, "cuda", 1, gpu_count=2)
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        plan_workers(None, "cuda", 1, gpu_count=0)
    with pytest.raises(ValueError, match="--runs-per-gpu"):
        plan_workers(None, "cuda", 1, gpu_count=1, runs_per_gpu=0)
    assert parse_jobs("auto") is None and parse_jobs("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="--jobs"):
            parse_jobs(bad)


def test_physical_cores_counts_hyperthreads_once(tmp_path):
    # Two cores with two hardware threads each (cpu0/cpu2 and cpu1/cpu3), as sysfs shows them.
    for cpu, core in ((0, 0), (1, 1), (2, 0), (3, 1)):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores({0, 1, 2, 3}, sysfs=tmp_path) == 2
    assert physical_cores({0, 2}, sysfs=tmp_path) == 1  # an affinity mask of one core
    assert physical_cores({0, 1, 7}, sysfs=tmp_path) == 3  # unreadable topology: CPUs count


def test_runs_per_gpu_on_cpu_is_a_usage_error_not_ignored(tmp_path, capsys):
    from attnzoo.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--device", "cpu", "--runs-per-gpu", "2", "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "--runs-per-gpu 2" in message and "--jobs" in message
    assert not (tmp_path / "b" / "runs").exists()
