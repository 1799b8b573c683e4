"""The SLURM preset and conf/local/, and how a lost job is recorded (no cluster needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir

from conftest import CONF_DIR


def _compose(conf_dir: Path, overrides=()):
    from groktransfer.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_preset_has_the_cluster_settings_and_preemption_defaults() -> None:
    launcher = _compose(CONF_DIR, ["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.groktransfer_slurm.launcher.SlurmLauncher"
    for key in ("partition", "account", "qos", "timeout_min", "cpus_per_task", "mem_gb", "gpus_per_task",
                "array_parallelism", "signal_delay_s", "max_num_timeout"):
        assert key in launcher, key
    # submitit counts USR2 as pre-emption only before min(0.8*limit, limit-10 min): keep room for it
    assert launcher.timeout_min >= 15 and launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0


def test_local_settings_apply_only_where_they_belong(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf, ignore=shutil.ignore_patterns("slurm.yaml", "default.yaml"))
    shutil.copy(CONF_DIR / "hydra" / "launcher" / "slurm.yaml", conf / "hydra" / "launcher" / "slurm.yaml")
    (conf / "local" / "slurm.yaml").write_text("partition: gpu\naccount: proj\n")
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  root: /scratch/x\n")
    slurm = _compose(conf, ["hydra/launcher=slurm", "hydra.launcher.account=cli"])
    assert slurm.hydra.launcher.partition == "gpu" and slurm.hydra.launcher.account == "cli"  # command line wins
    assert slurm.paths.root == "/scratch/x"
    basic = _compose(conf)  # the SLURM settings do not leak into other launchers
    assert "partition" not in basic.hydra.launcher and basic.paths.root == "/scratch/x"
    assert _compose(CONF_DIR).paths.root == "multirun"  # without local files: the defaults


def test_a_lost_job_is_recorded_failed_and_resumes_on_rerun(tmp_path: Path) -> None:
    from hydra_plugins.groktransfer_slurm.launcher import record_lost_job

    from groktransfer.runs.rundir import RunDir, Status
    from groktransfer.runs.index import RunIndex

    run = RunDir(tmp_path / "0_add_random_s0")
    run.update_status(status="running", run_id="abc", epoch=80)
    run.resume_path.write_bytes(b"state")
    record = record_lost_job(run.path, "SLURM job 7_0 ended CANCELLED without a result")
    assert record is not None and record.status == Status.FAILED and record.failed_epoch == 80
    assert "CANCELLED" in record.reason and "resume" in record.reason
    assert RunIndex(tmp_path / ".index").decide("abc", run.path, force=False).action == "resume"

    assert record_lost_job(run.path, "again") is None  # a failed record is not rewritten
    done = RunDir(tmp_path / "done")
    done.update_status(status="completed", run_id="def")
    assert record_lost_job(done.path, "x") is None and done.read_status().status == Status.COMPLETED
    assert record_lost_job(tmp_path / "never_started", "x") is None
